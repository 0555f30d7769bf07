"""``fedledger client ...``: an organization's command line (login, status, enroll, train-and-submit, claim, run).

Every command takes the same connection options (``--api``, ``--rpc``, ``--key-file``, ``--model-signer``,
``--deployments``, ``--json``); each also reads an environment variable, shown in ``--help``. Expected
failures print one line (``error: ...``, or ``{"error": code, "detail": ...}`` with ``--json``) and exit
with status 1; there is no traceback unless something is genuinely broken.

The ``client`` package is imported inside the commands, so ``fedledger`` itself keeps working where the
client's dependencies are not installed.
"""

# No ``from __future__ import annotations`` here: the common options are added to each command's
# signature at import time, and typer needs real annotation objects for them.

import functools
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import typer

from fedledger.evidence import in_words

DEFAULT_API = "http://127.0.0.1:8000"
DEFAULT_RPC = "http://127.0.0.1:8545"
DEFAULT_SPOOL = Path("~/.fedledger/client-spool")
WAD = 10**18

client_app = typer.Typer(
    name="client",
    help="Take part in federated rounds as an organization: sign in, stake, train, submit, claim rewards.",
    no_args_is_help=True,
    add_completion=False,
)


@dataclass
class Common:
    api: str
    rpc: str
    key_file: Path | None
    password_file: Path | None
    model_signer: str | None
    deployments: Path | None
    json_out: bool


_COMMON = [
    inspect.Parameter(
        "api",
        inspect.Parameter.KEYWORD_ONLY,
        default=DEFAULT_API,
        annotation=Annotated[
            str, typer.Option("--api", envvar="FEDLEDGER_API_URL", help="Base URL of the fedledger API.")
        ],
    ),
    inspect.Parameter(
        "rpc",
        inspect.Parameter.KEYWORD_ONLY,
        default=DEFAULT_RPC,
        annotation=Annotated[
            str,
            typer.Option(
                "--rpc", envvar="FEDLEDGER_CHAIN_RPC_URL", help="Ethereum JSON-RPC endpoint of the chain."
            ),
        ],
    ),
    inspect.Parameter(
        "key_file",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Path | None,
            typer.Option(
                "--key-file",
                envvar="FEDLEDGER_CLIENT_KEY_FILE",
                help="Wallet: a file with a 0x-hex private key, or an encrypted keystore JSON. "
                "Default: FEDLEDGER_CLIENT_PRIVATE_KEY.",
            ),
        ],
    ),
    inspect.Parameter(
        "password_file",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Path | None,
            typer.Option(
                "--password-file",
                help="File holding the keystore's password "
                "(else FEDLEDGER_CLIENT_KEYSTORE_PASSWORD, else a prompt).",
            ),
        ],
    ),
    inspect.Parameter(
        "model_signer",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            str | None,
            typer.Option(
                "--model-signer",
                envvar="FEDLEDGER_CLIENT_MODEL_SIGNER",
                help="Address that must have signed every model (required off the dev chain).",
            ),
        ],
    ),
    inspect.Parameter(
        "deployments",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Path | None,
            typer.Option(
                "--deployments",
                envvar="FEDLEDGER_CLIENT_DEPLOYMENTS",
                help="Trusted deployments file (contract addresses). Default: ask the API.",
            ),
        ],
    ),
    inspect.Parameter(
        "json_out",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[
            bool, typer.Option("--json", help="Machine-readable JSON on stdout; no progress bars.")
        ],
    ),
]
_COMMON_NAMES = [p.name for p in _COMMON]


def _with_common(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add the common options to a command; it receives them as ``opts: Common``. Expected errors exit 1."""
    signature = inspect.signature(fn)
    own = [p for p in signature.parameters.values() if p.name != "opts"]

    @functools.wraps(fn)
    def command(**kwargs: Any) -> None:
        opts = Common(**{name: kwargs.pop(name) for name in _COMMON_NAMES})
        _guard(opts, lambda: fn(opts=opts, **kwargs))

    command.__signature__ = signature.replace(parameters=own + _COMMON)  # type: ignore[attr-defined]
    return command


def _guard(opts: Common, action: Callable[[], None]) -> None:
    try:
        from client.errors import ClientError
    except ImportError:
        typer.echo(
            "error: the fedledger client package is not importable; install the project (pip install -e .)",
            err=True,
        )
        raise typer.Exit(1) from None

    try:
        action()
    except ClientError as exc:
        if opts.json_out:
            typer.echo(json.dumps({"error": exc.code, "detail": str(exc)}))
        else:
            typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


# ------------------------------------------------------------------------------------------ helpers
def _wallet(opts: Common) -> Any:
    from client.errors import WalletError
    from client.wallet import KeystorePasswordRequired, Wallet

    password = None
    if opts.password_file is not None:
        try:
            password = opts.password_file.expanduser().read_text().rstrip("\r\n")
        except OSError as exc:
            raise WalletError(f"cannot read the password file: {exc}") from None
    try:
        return Wallet.load(opts.key_file, password=password)
    except KeystorePasswordRequired:
        if opts.json_out or not sys.stdin.isatty():
            raise
        return Wallet.load(opts.key_file, password=typer.prompt("keystore password", hide_input=True))


def _organization(opts: Common, **kwargs: Any) -> Any:
    from client.sdk import Organization

    return Organization(
        _wallet(opts),
        opts.api.rstrip("/"),
        rpc_url=opts.rpc,
        trusted_model_signer=opts.model_signer,
        deployments=opts.deployments,
        **kwargs,
    )


def _tokens(wei: Any) -> str:
    try:
        value = Decimal(int(wei)) / WAD
    except (TypeError, ValueError):
        return str(wei)
    return f"{value.normalize():f}"


def _wei(tokens: str | None) -> int | None:
    if tokens is None:
        return None
    from client.errors import ConfigurationError

    try:
        value = Decimal(tokens)
    except InvalidOperation:
        raise ConfigurationError(f"--stake must be a number of tokens, got {tokens!r}") from None
    if value <= 0:
        raise ConfigurationError("--stake must be positive")
    return int(value * WAD)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str, sort_keys=True))


def _progress_bars(
    opts: Common,
) -> tuple[Callable[[int, int], None] | None, Callable[[int, int], None] | None, Callable[[], None]]:
    """(epoch callback, upload callback, close) for tqdm bars on stderr; none with --json."""
    if opts.json_out:
        return None, None, lambda: None
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def epochs(done: int, total: int) -> None:
        bar = bars.get("train")
        if bar is None:
            bar = bars["train"] = tqdm(total=total, desc="training", unit="epoch", leave=True, disable=None)
        bar.n = done
        bar.refresh()

    def upload(sent: int, total: int) -> None:
        bar = bars.get("upload")
        if bar is None:
            bar = bars["upload"] = tqdm(
                total=total, desc="uploading", unit="B", unit_scale=True, leave=True, disable=None
            )
        bar.n = sent
        bar.refresh()

    def close() -> None:
        for bar in bars.values():
            bar.close()
        bars.clear()

    return epochs, upload, close


def _training_kwargs(
    topk: float | None,
    half: bool,
    dp_clip: float | None,
    dp_noise: float,
    epochs: int | None,
    batch_size: int | None,
    learning_rate: float | None,
    spool_dir: Path | None,
    no_spool: bool,
) -> dict[str, Any]:
    from client.errors import ConfigurationError
    from client.training import LocalDP
    from fedledger.payload import Compression

    try:
        compression = Compression(topk_fraction=topk, half=half)
    except ValueError as exc:
        raise ConfigurationError(f"--topk: {exc}") from None
    if dp_noise and dp_clip is None:
        raise ConfigurationError("--dp-noise needs --dp-clip (the noise is a multiple of the clip norm)")
    return {
        "compression": compression,
        "dp": LocalDP(dp_clip, dp_noise) if dp_clip is not None else None,
        "trainer_options": {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate},
        "spool_dir": None if no_spool else (spool_dir or DEFAULT_SPOOL),
    }


def _load_data(data: Path, label_column: str | None, standardizer: Path | None) -> Any:
    """The CSV as it is (a missing or malformed file fails before anything else is asked of the API)."""
    from client.data import Standardizer, load_csv

    scaler = Standardizer.load(standardizer) if standardizer is not None else None
    return load_csv(data, label_column, standardize=False, standardizer=scaler)


def _preprocess(org: Any, dataset: Any, standardize: bool | None) -> Any:
    """Standardize per column when asked, or, when not said, when the model's input contract says so
    (the bundled task's features are used as they are: standardizing them would be refused)."""
    from client.data import Dataset, Standardizer
    from client.errors import ApiError

    if dataset.standardizer is not None:
        return dataset
    if standardize is None:
        try:
            contract = org.api.current_model().input_contract
        except ApiError:
            contract = None
        standardize = bool(contract.get("standardize", True)) if isinstance(contract, dict) else True
    if not standardize:
        return dataset
    scaler = Standardizer.fit(dataset.x)
    return Dataset(scaler.transform(dataset.x), dataset.y, dataset.feature_names, scaler)


# Options shared by train-and-submit and run.
DataOpt = Annotated[
    Path,
    typer.Option(
        "--data",
        help="CSV of numeric features, the label (a class id) last; checked against the model's input "
        "contract (`fedledger models current`: features, value range, classes) before anything is sent.",
    ),
]
LabelOpt = Annotated[
    str | None, typer.Option("--label-column", help="Name (or 0-based index) of the label column.")
]
ScalerOpt = Annotated[
    Path | None, typer.Option("--standardizer", help="Shared standardizer JSON {mean, std} to apply.")
]
StdOpt = Annotated[
    bool | None,
    typer.Option(
        "--standardize/--no-standardize",
        help="Standardize each column on the local data (default: as the model's input contract says).",
    ),
]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", min=0, help="Local epochs per round.")]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", min=1)]
LrOpt = Annotated[float | None, typer.Option("--lr", help="SGD learning rate.")]
TopkOpt = Annotated[
    float | None, typer.Option("--topk", help="Send only this fraction of the largest delta entries.")
]
HalfOpt = Annotated[bool, typer.Option("--half", help="Send float16 values.")]
ClipOpt = Annotated[
    float | None, typer.Option("--dp-clip", help="Local DP: clip the delta's L2 norm to this.")
]
NoiseOpt = Annotated[
    float,
    typer.Option("--dp-noise", min=0.0, help="Local DP: Gaussian noise multiplier (std = noise x clip)."),
]
SeedOpt = Annotated[
    int | None, typer.Option("--seed", help="Seed of the local training (shuffles, DP noise).")
]
EnrollOpt = Annotated[
    bool, typer.Option("--auto-enroll", help="Stake the minimum on-chain if not enrolled yet.")
]
SpoolOpt = Annotated[
    Path | None,
    typer.Option(
        "--spool-dir",
        envvar="FEDLEDGER_CLIENT_SPOOL_DIR",
        help=f"Where sealed updates wait for their receipt (default {DEFAULT_SPOOL}).",
    ),
]
NoSpoolOpt = Annotated[bool, typer.Option("--no-spool", help="Keep sealed updates in memory only.")]


# ------------------------------------------------------------------------------------------ commands
@client_app.command("login")
@_with_common
def login(
    opts: Common,
    show_token: Annotated[bool, typer.Option("--show-token", help="Print the access token.")] = False,
) -> None:
    """Sign in with the wallet (Sign-In with Ethereum) and show the session."""
    org = _organization(opts)
    with org:
        session = org.sign_in().model_dump(mode="json")
    if not show_token:
        session.pop("access_token", None)
    if opts.json_out:
        _print_json(session)
        return
    typer.echo(
        f"signed in as {session.get('address')} (roles: {', '.join(session.get('roles') or []) or 'none'}), "
        f"token valid until {session.get('expires_at')}"
    )
    if show_token:
        typer.echo(session.get("access_token", ""))


def score_text(value: object) -> str:
    """A 0-100 score as people read it (59.5, not 59.458436036958275); the JSON output keeps it exact."""
    return f"{value:.1f}" if isinstance(value, int | float) else "unknown"


@client_app.command("status")
@_with_common
def status(opts: Common) -> None:
    """Registration, on-chain enrollment, balances, the current round and model."""
    with _organization(opts) as org:
        info = org.status()
    if opts.json_out:
        _print_json(info)
        return
    typer.echo(f"organization {info['address']} at {info['api']}")
    participant = info.get("participant")
    if participant is None:
        typer.echo("  registration: not registered (run `fedledger client enroll`)")
    else:
        typer.echo(
            f"  registration: {participant.get('org_name')!r}, {participant.get('status')}, "
            f"reputation {score_text(participant.get('reputation'))}"
        )
        may = "yes" if participant.get("may_submit") else f"no ({participant.get('reason')})"
        typer.echo(f"  may submit:   {may}")
    chain = info["chain"]
    if "error" in chain:
        typer.echo(f"  chain:        unavailable ({chain['error']})")
    else:
        typer.echo(
            f"  chain {chain['chain_id']}: {chain['status']}, stake {_tokens(chain['stake_wei'])} "
            f"(minimum {_tokens(chain['min_stake_wei'])}), balance {_tokens(chain['token_balance_wei'])} tokens, "
            f"{_tokens(chain['eth_balance_wei'])} ETH"
        )
    round_ = info.get("round")
    if round_ is None:
        typer.echo("  round:        none opened yet")
    else:
        typer.echo(
            f"  round:        {round_['id']} {round_['status']} on model v{round_['model_version']}, "
            f"deadline {round_['deadline']}, {round_.get('submissions')} submissions"
        )
    result = info.get("round_result")
    if result is not None:
        typer.echo(f"  your update:  {_outcome(result)}")
    model = info.get("model")
    typer.echo(
        f"  model:        v{model['version']} sha256:{model['weights_hash']}"
        if model
        else "  model:        none yet"
    )


@client_app.command("enroll")
@_with_common
def enroll(
    opts: Common,
    org_name: Annotated[str | None, typer.Option("--org-name", help="Organization name to register.")] = None,
    stake: Annotated[
        str | None, typer.Option("--stake", help="Tokens to stake (default: the governed minimum).")
    ] = None,
) -> None:
    """Register the organization and stake on-chain (approve + enroll) unless already enrolled."""
    amount = _wei(stake)
    with _organization(opts, org_name=org_name) as org:
        org.sign_in()
        # Stake first: asking the API about an unenrolled wallet may leave it caching "not enrolled".
        result = org.ensure_enrolled(amount)
        participant = org.ensure_registered(org_name)
        if org_name and participant.org_name != org_name:
            participant = org.register(org_name)
    if opts.json_out:
        _print_json({"participant": participant.model_dump(mode="json"), "enrollment": asdict(result)})
        return
    typer.echo(f"registered as {participant.org_name!r}")
    if result.already_active:
        typer.echo(f"already enrolled on-chain with a stake of {_tokens(result.stake_wei)} tokens")
    else:
        typer.echo(
            f"enrolled on-chain with a stake of {_tokens(result.stake_wei)} tokens "
            f"(transactions {', '.join(result.tx_hashes)})"
        )


@client_app.command("train-and-submit")
@_with_common
def train_and_submit(
    opts: Common,
    data: DataOpt,
    label_column: LabelOpt = None,
    standardizer: ScalerOpt = None,
    standardize: StdOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    lr: LrOpt = None,
    topk: TopkOpt = None,
    half: HalfOpt = False,
    dp_clip: ClipOpt = None,
    dp_noise: NoiseOpt = 0.0,
    seed: SeedOpt = None,
    auto_enroll: EnrollOpt = False,
    spool_dir: SpoolOpt = None,
    no_spool: NoSpoolOpt = False,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the round is POSTED or FAILED.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait with --wait.")] = 900.0,
) -> None:
    """Train on a local CSV from the round's verified model and submit the sealed, signed update."""
    raw = _load_data(data, label_column, standardizer)
    kwargs = _training_kwargs(topk, half, dp_clip, dp_noise, epochs, batch_size, lr, spool_dir, no_spool)
    epochs_cb, upload_cb, close = _progress_bars(opts)
    try:
        with _organization(opts, **kwargs) as org:
            submission = org.participate(
                _preprocess(org, raw, standardize),
                seed=seed,
                wait=wait,
                timeout=timeout,
                auto_enroll=auto_enroll,
                train_progress=epochs_cb,
                upload_progress=upload_cb,
            )
    finally:
        close()
    summary = submission.summary()
    if opts.json_out:
        _print_json(summary)
        return
    _print_submission(summary)


def _print_submission(summary: dict[str, Any]) -> None:
    replay = " (same update as before: replayed)" if summary.get("replayed") else ""
    typer.echo(f"round {summary['round_id']}: update accepted, receipt {summary['receipt_id']}{replay}")
    before, after = summary.get("metrics_before"), summary.get("metrics_after")
    if before and after:
        typer.echo(
            f"  local accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f}, "
            f"loss {before['loss']:.4f} -> {after['loss']:.4f} on {summary['num_samples']} samples"
        )
    typer.echo(
        f"  {summary['envelope_bytes']} bytes sealed; timings "
        + ", ".join(f"{k} {v:.2f}s" for k, v in summary["timings"].items())
    )
    if summary.get("round_status"):
        typer.echo(f"  round {summary['round_id']} ended {summary['round_status']}")
    if summary.get("kept") is False:
        # Excluded updates are not paid: say why, so the organization can fix its data or training.
        reason = summary.get("excluded_reason") or "no reason recorded"
        typer.echo(f"  your update was excluded from the aggregate (not paid): {reason}")
        if evidence := in_words(summary.get("evidence") or []):
            typer.echo(f"  evidence against it: {evidence}")
    elif summary.get("kept"):
        typer.echo(
            f"  your update was kept: fitness {score_text(summary.get('fitness'))}, "
            f"reward {_tokens(summary.get('reward_wei') or 0)} tokens"
        )


def _outcome(result: dict[str, Any]) -> str:
    """`status`'s line for this organization's update in the round shown: an excluded one is not paid."""
    if result.get("kept"):
        return f"kept: fitness {score_text(result.get('fitness'))}, reward {_tokens(result.get('reward_wei') or 0)} tokens"
    return f"excluded: {result.get('excluded_reason') or 'no reason recorded'} (not paid)"


@client_app.command("claim")
@_with_common
def claim(
    opts: Common,
    round_ids: Annotated[
        list[int] | None, typer.Option("--round", help="Only this round (repeatable).")
    ] = None,
) -> None:
    """Claim every unclaimed reward on-chain (Merkle proofs from the API, checked locally first).

    A round still in its dispute window is skipped and reported with when it becomes claimable, and a round
    whose rewards were cancelled in that window is reported as cancelled (it never pays); the exit status is
    1 only when a round named with --round could not be claimed.
    """
    with _organization(opts) as org:
        results = org.claim_rewards(set(round_ids) if round_ids else None)
    unpaid = [r for r in results if r.status in ("not_claimable_yet", "cancelled")]
    if opts.json_out:
        _print_json([asdict(r) for r in results])
    else:
        if not results:
            typer.echo("no rewards to claim")
        for r in results:
            if r.status == "claimed":
                typer.echo(f"round {r.round_id}: claimed {_tokens(r.amount_wei)} tokens (tx {r.tx_hash})")
            elif r.status == "already_claimed":
                typer.echo(f"round {r.round_id}: {_tokens(r.amount_wei)} tokens already claimed")
            elif round_ids:
                typer.echo(f"error: {r.detail}", err=True)
            elif r.status == "cancelled":
                typer.echo(f"round {r.round_id}: {_tokens(r.amount_wei)} tokens cancelled: {r.detail}")
            else:
                typer.echo(
                    f"round {r.round_id}: {_tokens(r.amount_wei)} tokens not claimable yet: {r.detail}"
                )
    if unpaid and round_ids:
        raise typer.Exit(1)


@client_app.command("run")
@_with_common
def run(
    opts: Common,
    data: DataOpt,
    label_column: LabelOpt = None,
    standardizer: ScalerOpt = None,
    standardize: StdOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    lr: LrOpt = None,
    topk: TopkOpt = None,
    half: HalfOpt = False,
    dp_clip: ClipOpt = None,
    dp_noise: NoiseOpt = 0.0,
    seed: SeedOpt = None,
    auto_enroll: EnrollOpt = False,
    spool_dir: SpoolOpt = None,
    no_spool: NoSpoolOpt = False,
    claim_rewards: Annotated[
        bool, typer.Option("--claim/--no-claim", help="Claim rewards after posted rounds.")
    ] = True,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", min=0.01, help="Seconds between round checks.")
    ] = 5.0,
    max_rounds: Annotated[
        int | None, typer.Option("--max-rounds", min=1, help="Stop after this many submissions.")
    ] = None,
) -> None:
    """Take part in every round until Ctrl-C: train and submit when a round opens, claim when it is posted."""
    raw = _load_data(data, label_column, standardizer)
    kwargs = _training_kwargs(topk, half, dp_clip, dp_noise, epochs, batch_size, lr, spool_dir, no_spool)
    epochs_cb, upload_cb, close = _progress_bars(opts)

    def on_event(kind: str, payload: dict[str, Any]) -> None:
        close()
        if opts.json_out:
            typer.echo(json.dumps({"event": kind, **payload}, default=str, sort_keys=True))
        elif kind == "submitted":
            _print_submission(payload)
        elif kind == "claimed":
            typer.echo(f"round {payload['round_id']}: claimed {_tokens(payload['amount_wei'])} tokens")
        elif kind == "claim_pending":
            typer.echo(f"round {payload['round_id']}: not claimable yet: {payload['detail']}")
        elif kind == "claim_cancelled":
            typer.echo(f"round {payload['round_id']}: rewards cancelled: {payload['detail']}")
        elif kind == "round_open":
            typer.echo(f"round {payload['round_id']} is open until {payload['deadline']}")
        else:
            typer.echo(f"{kind.replace('_', ' ')}: {payload.get('reason', payload)}", err=True)

    with _organization(opts, poll_interval=poll_interval, **kwargs) as org:
        org.sign_in()
        if not opts.json_out:
            typer.echo(f"participating as {org.address}; Ctrl-C to stop")
        try:
            org.run(
                _preprocess(org, raw, standardize),
                max_rounds=max_rounds,
                claim=claim_rewards,
                auto_enroll=auto_enroll,
                seed=seed,
                on_event=on_event,
                train_progress=epochs_cb,
                upload_progress=upload_cb,
            )
        except KeyboardInterrupt:
            typer.echo("stopped", err=True)
        finally:
            close()


def register(app: typer.Typer) -> None:
    app.add_typer(client_app, name="client")
