"""fedledger dashboard: ``fedledger dashboard`` (or ``streamlit run visualization/app.py``).

Reads the API (``FEDLEDGER_API_URL``) and the chain (``FEDLEDGER_CHAIN_RPC_URL``, contracts from the API's
``/v1/chain/deployments``). Organizations sign in with their wallet; nothing here holds a key.
"""

from __future__ import annotations

import sys
from pathlib import Path

# ``streamlit run visualization/app.py`` puts visualization/ on sys.path, not the project: add the project.
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import streamlit as st  # noqa: E402

from fedledger.api.errors import ApiError, ApiUnreachableError  # noqa: E402
from visualization.session import build_context, show_flash, transactions_sidebar, wallet_sidebar  # noqa: E402
from visualization.views import contributions, governance, overview, token, training  # noqa: E402

PAGES = {
    "Overview": ("overview", overview.render),
    "Training": ("training", training.render),
    "Contributions": ("contributions", contributions.render),
    "Token economics": ("token", token.render),
    "Governance": ("governance", governance.render),
}
SLUGS = {slug: name for name, (slug, _) in PAGES.items()}


def main() -> None:
    st.set_page_config(page_title="fedledger", page_icon="🔗", layout="wide")
    ctx = build_context()

    if "page" not in st.session_state:
        # A new session opens the page its URL names (``?page=training``); the radio decides afterwards.
        st.session_state["page"] = SLUGS.get(str(st.query_params.get("page", "")), "Overview")
    with st.sidebar:
        st.title("fedledger")
        page = st.radio("Page", list(PAGES), key="page")
        st.query_params["page"] = PAGES[page][0]
        st.divider()
        wallet_sidebar(ctx)
        transactions_sidebar()
        st.divider()
        st.caption(f"API {ctx.config.api_url}")
        if ctx.chain is not None:
            st.caption(f"Chain {ctx.chain.chain_id} · {ctx.config.chain_rpc_url}")
        else:
            st.caption(f"Chain unreachable: {ctx.chain_error}")

    show_flash()
    try:
        PAGES[page][1](ctx)
    except ApiUnreachableError as exc:
        st.error(f"The API is not reachable: {exc}")
    except ApiError as exc:
        st.error(f"The API answered with an error: {exc}")
    finally:
        ctx.api.close()


main()
