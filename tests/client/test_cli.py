"""``fedledger client ...`` end to end: typer's CliRunner drives the CLI, which talks HTTP to the real API
(uvicorn in a thread, on the middleware tests' settings) and JSON-RPC to the session's Hardhat node."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from app.cli import app
from client.data import Dataset, save_csv
from client.sealing import PreparedUpdate
from client.spool import round_scope
from client.training import SoftmaxRegression
from fedledger.api.schemas import RoundOut
from fedledger.chain.deployments import Deployments
from fedledger.chain.devnode import free_port
from fedledger.config import Settings
from fedledger.devkeys import dev_private_key
from fedledger.domain.tasks import CeleryTaskQueue
from fedledger.payload import encode_weights
from middleware.app import create_app
from tests.client.conftest import CLIENT_ORGS, FEATURES, NEVER_ENROLLED, OPERATOR, address_of, login

pytestmark = [pytest.mark.chain, pytest.mark.postgres, pytest.mark.redis]

runner = CliRunner()
CLEAN_ENV = {
    "FEDLEDGER_CLIENT_PRIVATE_KEY": None,
    "FEDLEDGER_CLIENT_KEY_FILE": None,
    "FEDLEDGER_API_URL": None,
    "FEDLEDGER_CLIENT_MODEL_SIGNER": None,
    "FEDLEDGER_CLIENT_DEPLOYMENTS": None,
    "FEDLEDGER_CHAIN_RPC_URL": None,
    "FEDLEDGER_CLIENT_SPOOL_DIR": None,
}


@pytest.fixture
def live_api(settings: Settings) -> Iterator[str]:
    """The API served over real HTTP on a free port (its SIWE domain is that host:port)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    live = settings.model_copy(update={"siwe_domain": f"127.0.0.1:{port}", "public_url": url})
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(live, queue=CeleryTaskQueue(live.resolved_broker_url)),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            ws="none",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def cli(*args: str, index: int = CLIENT_ORGS[0], **env: str | None):  # type: ignore[no-untyped-def]
    return runner.invoke(
        app,
        ["client", *args],
        env={**CLEAN_ENV, "FEDLEDGER_CLIENT_PRIVATE_KEY": dev_private_key(index), **env},
    )


def test_status_json_and_human(live_api: str, dev_chain) -> None:  # type: ignore[no-untyped-def]
    rpc = dev_chain[0].rpc_url
    result = cli("status", "--api", live_api, "--rpc", rpc, "--json")
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert status["address"] == address_of(CLIENT_ORGS[0])
    assert status["registered"] is False and status["participant"] is None
    assert status["chain"]["chain_id"] == 31337 and int(status["chain"]["min_stake_wei"]) > 0
    assert status["round"] is None and status["model"] is None
    human = cli("status", "--rpc", rpc, FEDLEDGER_API_URL=live_api)  # the API URL from the environment
    assert human.exit_code == 0, human.output
    assert f"organization {status['address']} at {live_api}" in human.stdout
    assert "not registered" in human.stdout and "round:        none opened yet" in human.stdout


def test_enroll_train_and_submit_then_claim(live_api: str, dev_chain, tmp_path: Path, digits_parts) -> None:  # type: ignore[no-untyped-def]
    rpc, index = dev_chain[0].rpc_url, CLIENT_ORGS[1]
    result = cli("enroll", "--api", live_api, "--rpc", rpc, "--org-name", "CLI clinic", "--json", index=index)
    assert result.exit_code == 0, result.output
    enrolled = json.loads(result.stdout)
    assert enrolled["participant"]["org_name"] == "CLI clinic" and enrolled["enrollment"]["stake_wei"] > 0

    with httpx.Client(base_url=live_api) as http:  # the operator: genesis model and a round
        operator = login(http, OPERATOR)  # type: ignore[arg-type]
        model = encode_weights(SoftmaxRegression(FEATURES, 10).init_weights())
        assert http.post("/v1/models", content=model, headers=operator).status_code == 201
        round_ = http.post("/v1/rounds", json={"duration_seconds": 600, "quorum": 3}, headers=operator).json()

    data = tmp_path / "local.csv"
    save_csv(digits_parts[1], data)
    args = (
        "train-and-submit",
        "--api",
        live_api,
        "--rpc",
        rpc,
        "--data",
        str(data),
        "--label-column",
        "label",
        "--no-standardize",
        "--epochs",
        "5",
        "--topk",
        "0.5",
        "--spool-dir",
        str(tmp_path / "spool"),
        "--json",
    )
    start = time.perf_counter()
    result = cli(*args, index=index)
    elapsed = time.perf_counter() - start
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (
        summary["round_id"] == round_["id"]
        and summary["receipt_id"]
        and summary["num_samples"] == len(digits_parts[1])
    )
    assert summary["metrics_after"]["accuracy"] > summary["metrics_before"]["accuracy"]
    print(
        f"\ntrain-and-submit over HTTP: {elapsed:.2f} s in the CLI; phases {summary['timings']}; "
        f"{summary['envelope_bytes']} bytes sealed"
    )
    again = cli(*args, index=index)  # the receipt is spooled: nothing is trained or sent twice
    assert again.exit_code == 0 and json.loads(again.stdout)["receipt_id"] == summary["receipt_id"]

    human = cli(*args[:-1], index=index)
    assert (
        human.exit_code == 0
        and f"round {round_['id']}: update accepted, receipt {summary['receipt_id']}" in human.stdout
    )

    claimed = cli("claim", "--api", live_api, "--rpc", rpc, "--json", index=index)
    assert claimed.exit_code == 0, claimed.output
    assert json.loads(claimed.stdout) == []  # the round has not been posted: nothing to claim yet

    # `run` takes part in the open round as another organization (stopping after one submission here).
    other = CLIENT_ORGS[2]
    assert cli("enroll", "--api", live_api, "--rpc", rpc, index=other).exit_code == 0
    ran = cli(
        "run",
        "--api",
        live_api,
        "--rpc",
        rpc,
        "--data",
        str(data),
        "--no-standardize",
        "--no-spool",
        "--poll-interval",
        "0.05",
        "--max-rounds",
        "1",
        "--json",
        index=other,
    )
    assert ran.exit_code == 0, ran.output
    events = [json.loads(line) for line in ran.stdout.splitlines()]
    assert [e["event"] for e in events] == ["round_open", "submitted"] and events[1]["round_id"] == round_[
        "id"
    ]


def test_expected_failures_exit_1_with_one_line_and_no_traceback(
    live_api: str, dev_chain, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    rpc = dev_chain[0].rpc_url
    result = cli("status", "--api", live_api, "--rpc", rpc, FEDLEDGER_CLIENT_PRIVATE_KEY=None)
    assert (
        result.exit_code == 1
        and "error: no wallet configured" in result.output
        and "Traceback" not in result.output
    )
    result = cli("status", "--api", live_api, "--rpc", rpc, "--json", FEDLEDGER_CLIENT_PRIVATE_KEY="0x1234")
    assert result.exit_code == 1 and json.loads(result.stdout)["error"] == "wallet"
    result = cli("train-and-submit", "--api", live_api, "--rpc", rpc, "--data", str(tmp_path / "missing.csv"))
    assert result.exit_code == 1 and "does not exist" in result.output and "Traceback" not in result.output
    result = cli(
        "train-and-submit",
        "--api",
        live_api,
        "--rpc",
        rpc,
        "--data",
        str(tmp_path / "missing.csv"),
        "--dp-noise",
        "1.0",
    )
    assert result.exit_code == 1
    (tmp_path / "d.csv").write_text("a,label\n1,0\n2,1\n")
    # Account 17 is never enrolled on-chain (other suites rely on that; nothing here enrolls it).
    result = cli(
        "train-and-submit",
        "--api",
        live_api,
        "--rpc",
        rpc,
        "--data",
        str(tmp_path / "d.csv"),
        "--json",
        index=NEVER_ENROLLED,
    )
    assert result.exit_code == 1
    refusal = json.loads(result.stdout)
    assert refusal["error"] == "not_enrolled" and "fedledger client enroll" in refusal["detail"]
    result = cli("login", "--api", live_api, "--rpc", rpc, "--model-signer", "0xnot-an-address")
    assert result.exit_code == 1 and "trusted model signer must be a 0x address" in result.output


def test_status_reports_an_unreachable_chain_instead_of_failing(live_api: str) -> None:
    from fedledger.chain.devnode import free_port as closed_port

    result = cli("status", "--api", live_api, "--rpc", f"http://127.0.0.1:{closed_port()}")
    assert result.exit_code == 0, result.output
    assert "chain:        unavailable" in result.stdout and "registration: not registered" in result.stdout


def _stale_entry(folder: Path, prepared: PreparedUpdate, receipt: dict[str, object]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    name = f"round-{prepared.round_id}"
    (folder / f"{name}.envelope").write_bytes(prepared.envelope)
    meta = {k: v for k, v in asdict(prepared).items() if k != "envelope"}
    (folder / f"{name}.json").write_text(json.dumps(meta))
    (folder / f"{name}.receipt.json").write_text(json.dumps(receipt))


def test_a_receipt_is_printed_only_when_the_server_gave_it_for_this_update(
    live_api: str, dev_chain, tmp_path: Path, digits_parts
) -> None:  # type: ignore[no-untyped-def]
    """Issue 22 item 1: a second `make run` (new chain, same addresses, round ids from 1 again) found the
    previous deployment's receipt for the same round id and printed "update accepted" with exit 0; the API
    had received nothing. Data the model cannot use was "accepted" from the spool too."""
    rpc, index = dev_chain[0].rpc_url, CLIENT_ORGS[3]
    assert cli("enroll", "--api", live_api, "--rpc", rpc, index=index).exit_code == 0
    with httpx.Client(base_url=live_api) as http:
        operator = login(http, OPERATOR)  # type: ignore[arg-type]
        model = encode_weights(SoftmaxRegression(FEATURES, 10).init_weights())
        assert http.post("/v1/models", content=model, headers=operator).status_code == 201
        round_ = http.post("/v1/rounds", json={"duration_seconds": 600, "quorum": 3}, headers=operator).json()
        contract = http.get("/v1/models/current").json()["input_contract"]
    # The model version says what data it takes (the server's holdout task: the bundled digits).
    assert contract["features"] == 64 and contract["value_range"] == [0.0, 1.0] and contract["classes"] == 10
    assert contract["standardize"] is False and "divided by 16" in contract["preprocessing"]
    round_id, address, spool = round_["id"], address_of(index), tmp_path / "spool"
    # What the previous deployment's run left for the same round id: its envelope and its receipt, in the
    # spool's folder for this API (and in a folder of a round with the same id opened at another time).
    envelope = b"the previous deployment's envelope"
    stale = PreparedUpdate(
        round_id, 1, 100, envelope, "0x" + "ab" * 65, "0x" + hashlib.sha256(envelope).hexdigest(), "k", 99
    )
    stale_receipt = {
        "receipt_id": "ca7e74ed-previous",
        "round_id": round_id,
        "payload_hash": stale.payload_hash,
    }
    api_folder = spool / address / live_api.replace("://", "_").replace("/", "_").replace(":", "_")
    _stale_entry(api_folder, stale, stale_receipt)
    with httpx.Client(base_url=live_api) as http:
        deployments = Deployments.from_dict(http.get("/v1/chain/deployments").json())
    earlier = round_scope(
        deployments, RoundOut.model_validate({**round_, "opened_at": "2026-01-01T00:00:00Z"})
    )
    _stale_entry(api_folder / earlier, stale, stale_receipt)

    data = tmp_path / "local.csv"
    save_csv(digits_parts[3], data)
    args = ("train-and-submit", "--api", live_api, "--rpc", rpc, "--data", str(data), "--epochs", "2")
    args += ("--spool-dir", str(spool))
    result = cli(*args, "--json", index=index)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["receipt_id"] != stale_receipt["receipt_id"] and not summary["replayed"]
    assert httpx.get(f"{live_api}/v1/rounds/{round_id}").json()["submissions"] == 1
    # The receipt of this update is spooled now; running again resends the envelope and prints the
    # server's answer (the same receipt, replayed), never the file.
    again = cli(*args, index=index)
    assert again.exit_code == 0, again.output
    assert f"round {round_id}: update accepted, receipt {summary['receipt_id']} (same update" in again.stdout

    # Data the model cannot use is refused before the spool is looked at, with what is wrong.
    narrow = tmp_path / "ten.csv"
    narrow.write_text("".join(",".join(["0.5"] * 10) + f",{i % 10}\n" for i in range(30)))
    refused = cli(*args[:6], str(narrow), *args[7:], index=index)
    assert (
        refused.exit_code == 1 and "the data has 10 feature columns, the model expects 64" in refused.output
    )
    raw = tmp_path / "raw.csv"  # scikit-learn's digits as they come: pixels 0-16
    part = digits_parts[3]
    save_csv(Dataset(part.x * 16.0, part.y, part.feature_names), raw)
    refused = cli(*args[:6], str(raw), *args[7:], index=index)
    assert refused.exit_code == 1, refused.output
    assert "values 0-16, the model expects [0, 1]: scale your pixels by 1/16" in refused.output
    refused = cli(*args, "--standardize", index=index)
    assert refused.exit_code == 1 and "the features were standardized here" in refused.output
