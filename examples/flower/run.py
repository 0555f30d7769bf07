"""Run the Flower app in this directory on a real Flower deployment: one SuperLink, N SuperNodes, `flwr run`.

    .venv/bin/python examples/flower/run.py --quick                 # 5 clients (2 Byzantine), 3 rounds, median
    .venv/bin/python examples/flower/run.py --clients 7 --byzantine 2 --rounds 5 --strategy multi_krum

Every Flower component is its own process (SuperLink, SuperNodes, and the ServerApp / ClientApp processes
they spawn), started with Flower's own commands; nothing is installed at run time (``uv`` installs are
disabled) and Flower's state lives in a temporary FLWR_HOME. The ServerApp writes a report of every round
(kept and excluded nodes, scores, reputation, holdout accuracy), which this script prints.

With ``--api-url`` the rounds run on a fedledger deployment instead (platform mode): pass the operator's
key file, and one key file per client (``--key-files``); see README "Using fedledger from Flower".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

APP_DIR = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports. Every socket stays bound until all are chosen: closed one by one, the
    kernel may hand the same port out again, and the second SuperNode given it dies on start."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string


def config_string(values: dict[str, Any]) -> str:
    """``k1=v1 k2="v2"``: Flower's --node-config / --run-config syntax (TOML values)."""
    return " ".join(f"{key}={_toml_value(value)}" for key, value in values.items())


@dataclass
class Federation:
    """A SuperLink and its SuperNodes; ``run`` submits the app with ``flwr run`` and waits for it to end."""

    workdir: Path
    nodes: list[dict[str, Any]]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    control: str = ""

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["FLWR_HOME"] = str(self.workdir / "flwr-home")
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        # No network but the federation's own: no usage telemetry to Flower's servers, no PyPI update check.
        env.setdefault("FLWR_TELEMETRY_ENABLED", "0")
        env.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
        # The SuperLink and SuperNodes start flower-superexec / flwr-serverapp / flwr-clientapp by name.
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        return env

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.processes.append(
            subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        )

    def start(self) -> None:
        fleet, appio, self_control, *clientappio = free_ports(3 + len(self.nodes))
        self.control = f"127.0.0.1:{self_control}"
        home = self.workdir / "flwr-home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "federation"\n\n[superlink.federation]\naddress = "{self.control}"\ninsecure = true\n'
        )
        self._spawn(
            "superlink",
            [
                str(BIN / "flower-superlink"),
                "--insecure",
                "--disable-runtime-dependency-installation",
                f"--fleet-api-address=127.0.0.1:{fleet}",
                f"--serverappio-api-address=127.0.0.1:{appio}",
                f"--control-api-address={self.control}",
            ],
        )
        for port in (fleet, self_control):
            _wait_for_port(port, self.processes[0], self.workdir / "superlink.log")
        for i, (node_config, port) in enumerate(zip(self.nodes, clientappio, strict=True)):
            self._spawn(
                f"supernode-{i}",
                [
                    str(BIN / "flower-supernode"),
                    "--insecure",
                    f"--superlink=127.0.0.1:{fleet}",
                    f"--clientappio-api-address=127.0.0.1:{port}",
                    f"--node-config={config_string(node_config)}",
                ],
            )

    def run(self, run_config: dict[str, Any], timeout: float) -> None:
        """``flwr run`` with --stream: returns when the run has finished; raises if it failed, or at once if
        the SuperLink or a SuperNode exits meanwhile (the ServerApp would wait for that node until the
        timeout)."""
        argv = [str(BIN / "flwr"), "run", str(APP_DIR), "federation", "--stream"]
        if run_config:
            argv += ["--run-config", config_string(run_config)]
        with (self.workdir / "flwr-run.log").open("ab") as log:
            run = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env)
            deadline = time.monotonic() + timeout
            try:
                while run.poll() is None:
                    exited = [p for p in self.processes if p.poll() is not None]
                    if exited:
                        raise RuntimeError(
                            f"{Path(str(exited[0].args[0])).name} exited with {exited[0].returncode} during "
                            f"the run; see the logs in {self.workdir}"
                        )
                    if time.monotonic() > deadline:
                        raise subprocess.TimeoutExpired(argv, timeout)
                    time.sleep(0.2)
            finally:
                if run.poll() is None:
                    run.kill()
                    run.wait()
        if run.returncode != 0:
            raise RuntimeError(f"flwr run exited with {run.returncode}; see {self.workdir}/flwr-run.log")

    def stop(self) -> None:
        """SIGTERM to every process group, then SIGKILL to whatever is left in them. Each group, not only
        each leader: the SuperLink's ServerApp processes (flower-superexec, flwr-serverapp) live in its
        group and may outlive it, and a group whose leader has already exited still holds them."""
        for process in reversed(self.processes):
            _signal_group(process, signal.SIGTERM)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=15)
        for process in self.processes:
            _signal_group(process, signal.SIGKILL)
            process.wait(timeout=5)


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # A group of which nobody is left is gone: nothing to do.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the SuperLink exited with {process.returncode}; see {log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the SuperLink did not listen on {port} within {timeout:.0f} s; see {log}")


@contextlib.contextmanager
def federation(nodes: Sequence[dict[str, Any]], workdir: Path) -> Iterator[Federation]:
    fed = Federation(workdir, list(nodes))
    try:
        fed.start()
        yield fed
    finally:
        fed.stop()


def node_configs(
    clients: int, byzantine: int, attack: str, key_files: Sequence[str] = (), **extra: Any
) -> list[dict[str, Any]]:
    """Partition ids 0..N-1; the last ``byzantine`` clients attack; key files (platform mode) in order."""
    nodes = []
    for i in range(clients):
        node: dict[str, Any] = {"partition-id": i, "num-partitions": clients}
        if i >= clients - byzantine:
            node["attack"] = attack
        if key_files:
            node["fedledger-key-file"] = key_files[i]
        node.update({k: v for k, v in extra.items() if v})
        nodes.append(node)
    return nodes


def run_federation(
    *,
    clients: int,
    byzantine: int,
    attack: str,
    rounds: int,
    run_config: dict[str, Any],
    workdir: Path,
    key_files: Sequence[str] = (),
    node_extra: dict[str, Any] | None = None,
    timeout: float = 1800.0,
) -> tuple[list[dict[str, Any]], float]:
    """Start the deployment, run the app, stop everything; returns the ServerApp's report and the seconds
    from ``flwr run`` to its end."""
    report_path = workdir / "report.json"
    config = {
        "num-server-rounds": rounds,
        "num-nodes": clients,
        "report-path": str(report_path),
        **run_config,
    }
    with federation(
        node_configs(clients, byzantine, attack, key_files, **(node_extra or {})), workdir
    ) as fed:
        started = time.monotonic()
        fed.run(config, timeout)
        seconds = time.monotonic() - started
    if not report_path.exists():
        raise RuntimeError(f"the ServerApp wrote no report; see the logs in {workdir}")
    return json.loads(report_path.read_text()), seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="5 clients, 2 Byzantine, 3 rounds, median")
    parser.add_argument("--clients", type=int, default=7)
    parser.add_argument("--byzantine", type=int, default=2)
    parser.add_argument("--attack", choices=("scaling", "signflip"), default="scaling")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--strategy", default="multi_krum")
    parser.add_argument(
        "--byzantine-fraction",
        type=float,
        default=0.3,
        help="share of clients the Krum family / trimmed mean assume Byzantine (f = floor(share x n))",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="logs and Flower state, kept after the run (default: a new temporary directory)",
    )
    parser.add_argument("--api-url", default="", help="platform mode: the fedledger API")
    parser.add_argument("--rpc-url", default="")
    parser.add_argument("--deployments", default="", help="a deployments file the participants trust")
    parser.add_argument("--operator-key-file", default="")
    parser.add_argument(
        "--key-files", nargs="*", default=[], help="platform mode: one wallet key file per client"
    )
    parser.add_argument("--round-seconds", type=int, default=120)
    args = parser.parse_args(argv)
    if args.quick:
        # Krum-family rules need n >= 2f + 3: 2 attackers in 5 clients are more than any f they allow; the
        # coordinate-wise median holds them.
        args.clients, args.byzantine, args.rounds, args.strategy = 5, 2, 3, "median"
    if args.api_url and len(args.key_files) != args.clients:
        parser.error(f"platform mode needs one --key-files entry per client ({args.clients})")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fedledger-flower-"))
    workdir.mkdir(parents=True, exist_ok=True)
    run_config: dict[str, Any] = {"strategy": args.strategy, "byzantine-fraction": args.byzantine_fraction}
    node_extra: dict[str, Any] = {}
    if args.api_url:
        run_config |= {
            "api-url": args.api_url,
            "rpc-url": args.rpc_url,
            "deployments": args.deployments,
            "operator-key-file": args.operator_key_file,
            "round-seconds": args.round_seconds,
        }
        node_extra = {
            "fedledger-api-url": args.api_url,
            "fedledger-rpc-url": args.rpc_url,
            "fedledger-deployments": args.deployments,
        }
    takes_share = args.strategy in ("krum", "multi_krum", "bulyan", "trimmed_mean")
    rule = args.strategy + (f" byzantine_fraction={args.byzantine_fraction}" if takes_share else "")
    mode = f"platform {args.api_url}" if args.api_url else f"local, {rule}"
    print(
        f"Flower federation: {args.clients} clients ({args.byzantine} {args.attack}), {args.rounds} rounds, {mode}"
    )
    print(f"logs: {workdir}")
    report, seconds = run_federation(
        clients=args.clients,
        byzantine=args.byzantine,
        attack=args.attack,
        rounds=args.rounds,
        run_config=run_config,
        workdir=workdir,
        key_files=args.key_files,
        node_extra=node_extra,
    )
    for entry in report:
        accuracy = entry.get("holdout_accuracy")
        partitions = {n["node_id"]: n for n in entry["nodes"]}
        print(
            f"round {entry['server_round']}: {entry['status']}, holdout accuracy "
            f"{accuracy if accuracy is None else f'{accuracy:.3f}'}, kept {len(entry['kept'])}, "
            f"excluded {len(entry['excluded'])}"
            + (f", fedledger round {entry['platform_round']}" if entry.get("platform_round") else "")
        )
        for node_id in entry["excluded"]:
            node = partitions[node_id]
            partition = node["metrics"].get("partition-id")
            print(
                f"    excluded node {node_id} (partition {'?' if partition is None else int(partition)}): "
                f"honesty {node['honesty']:.1f}, fitness {node['fitness']:.1f}, reputation {node['reputation']:.1f}"
            )
    print(f"{seconds:.1f} s from flwr run to the end of the run")
    # The folder printed at the start is kept: its logs are what one reads when a round looks wrong.
    print(f"logs kept in {workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
