"""The operator's CLI (`fedledger rounds open|list`, `fedledger models current|rollback`) against the real API
over HTTP: the README's flow after `make run` (open a round, list it) works without reading the code."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from app.cli import app
from client.training import SoftmaxRegression
from db.models import Round, RoundStatus
from db.session import session_factory
from fedledger.config import Settings, get_settings
from fedledger.devkeys import dev_private_key
from fedledger.payload import encode_weights
from tests.client.conftest import FEATURES, OPERATOR, login, settings  # noqa: F401 - the fixture
from tests.client.test_cli import live_api  # noqa: F401 - the fixture

pytestmark = [pytest.mark.chain, pytest.mark.postgres, pytest.mark.redis]

runner = CliRunner()


def run(*args: str, **env: str | None):  # type: ignore[no-untyped-def]
    get_settings.cache_clear()
    try:
        return runner.invoke(app, list(args), env={"FEDLEDGER_OPERATOR_KEY_FILE": None, **env})
    finally:
        get_settings.cache_clear()


def test_open_list_and_the_model_from_the_cli(live_api: str, settings: Settings, tmp_path: Path) -> None:  # noqa: F811
    key_file = tmp_path / "operator.key"
    key_file.write_text(dev_private_key(OPERATOR))
    listed = run("rounds", "list", "--api", live_api)
    assert listed.exit_code == 0, listed.output
    assert "no round yet" in listed.stdout

    # No model yet: the API's refusal comes back as one line and exit code 1, no traceback.
    refused = run("rounds", "open", "--api", live_api, "--key-file", str(key_file))
    assert refused.exit_code == 1 and refused.output.startswith("error: "), refused.output
    assert "Traceback" not in refused.output

    with httpx.Client(base_url=live_api) as http:
        operator = login(http, OPERATOR)  # type: ignore[arg-type]
        model = encode_weights(SoftmaxRegression(FEATURES, 10).init_weights())
        assert http.post("/v1/models", content=model, headers=operator).status_code == 201

    opened = run(
        "rounds", "open", "--api", live_api, "--key-file", str(key_file), "--duration", "600", "--quorum", "2"
    )
    assert opened.exit_code == 0, opened.output
    round_id = int(opened.stdout.split()[1])
    assert f"round {round_id} is OPEN on model v1" in opened.stdout and "quorum 2" in opened.stdout
    assert "mode clear," in opened.stdout  # secure_group_size 0 and DP off at genesis
    current = httpx.get(f"{live_api}/v1/rounds/current").json()
    assert current["id"] == round_id and current["quorum"] == 2

    listed = run("rounds", "list", "--api", live_api)
    assert listed.exit_code == 0, listed.output
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    assert rows[0][:2] == [str(round_id), "OPEN"] and rows[0][3] == "v1"

    # One round at a time: the refusal names the command that closes the open one, which the CLI has.
    refused = run("rounds", "open", "--api", live_api, "--key-file", str(key_file))
    assert refused.exit_code == 1 and f"`fedledger rounds close {round_id}`" in refused.output
    closed = run("rounds", "close", str(round_id), "--api", live_api, "--key-file", str(key_file))
    assert closed.exit_code == 0, closed.output
    assert f"round {round_id} closes now with 0 update(s)" in closed.stdout
    shown = httpx.get(f"{live_api}/v1/rounds/{round_id}").json()
    deadline = datetime.fromisoformat(shown["deadline"].replace("Z", "+00:00"))
    assert deadline <= datetime.now(UTC) and shown["params"]["max_round_extensions"] == 0
    other_key = tmp_path / "not-operator.key"
    other_key.write_text(dev_private_key(OPERATOR + 1))
    forbidden = run("rounds", "close", str(round_id), "--api", live_api, "--key-file", str(other_key))
    assert forbidden.exit_code == 1 and forbidden.output.startswith("error: "), forbidden.output

    # A round POSTED after a deadline extension did not fail (older closes kept the extension's note).
    with session_factory(settings.resolved_database_url).begin() as session:
        posted = session.get(Round, round_id)
        assert posted is not None
        posted.status, posted.extensions = RoundStatus.posted, 1
        posted.failure_reason = "only 2 usable updates of the 3 needed; deadline extended"
    listed = run("rounds", "list", "--api", live_api)
    assert listed.exit_code == 0 and "failed" not in listed.stdout, listed.stdout
    assert f"{round_id}  POSTED" in listed.stdout and "(1 deadline extension(s))" in listed.stdout
    done = run("rounds", "close", str(round_id), "--api", live_api, "--key-file", str(key_file))
    assert done.exit_code == 1 and "only an OPEN round closes" in done.output, done.output

    shown = run("models", "current", "--api", live_api)
    assert shown.exit_code == 0 and shown.stdout.startswith("model v1 (active, from genesis)"), shown.output

    # Only an operator may open a round: another wallet is refused by the API (403), said in one line.
    other = tmp_path / "other.key"
    other.write_text(dev_private_key(OPERATOR + 1))
    forbidden = run("rounds", "open", "--api", live_api, "--key-file", str(other))
    assert forbidden.exit_code == 1 and forbidden.output.startswith("error: "), forbidden.output


def test_off_the_dev_chain_the_operator_key_must_be_given(live_api: str) -> None:  # noqa: F811
    result = run("rounds", "open", "--api", live_api, FEDLEDGER_CHAIN_ID="11155111")
    assert result.exit_code == 1
    assert "no operator key: pass --key-file PATH or set FEDLEDGER_OPERATOR_KEY_FILE" in result.output
