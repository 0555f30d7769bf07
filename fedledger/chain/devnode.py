"""A local Hardhat node with the fedledger contracts deployed: for ``make run``, ``fedledger chain`` and tests.

The node runs in its own process group so that stopping it also stops the ``node`` processes Hardhat
forks; the deploy runs the same ``scripts/deploy.js`` an operator runs against any network.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import httpx

from fedledger.chain.deployments import Deployments
from fedledger.config import PROJECT_ROOT

BLOCKCHAIN_DIR = PROJECT_ROOT / "blockchain"


class DevChainError(RuntimeError):
    """The dev chain could not be started or deployed to."""


def port_is_free(host: str, port: int) -> bool:
    """Whether ``port`` can be bound on ``host`` now, so a taken port fails fast with a clear message."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free on ``host``, for nodes and APIs of tests and benchmarks run side by side."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def rpc_chain_id(url: str, timeout: float = 2.0) -> int | None:
    """The chain id an RPC endpoint answers with, or None when nothing answers."""
    try:
        response = httpx.post(
            url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=timeout
        )
        return int(response.json()["result"], 16)
    except (httpx.HTTPError, KeyError, ValueError):
        return None


class DevChain:
    """``with DevChain(port=...) as chain: chain.deploy()`` — a Hardhat node that stops when the block ends."""

    def __init__(
        self,
        port: int = 8545,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        blockchain_dir: Path = BLOCKCHAIN_DIR,
    ) -> None:
        self.host = host
        self.port = port
        self.blockchain_dir = blockchain_dir
        self.log_path = log_path or (PROJECT_ROOT / "var" / f"hardhat-node-{port}.log")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def rpc_url(self) -> str:
        """The node's JSON-RPC endpoint (what ``FEDLEDGER_CHAIN_RPC_URL`` points at)."""
        return f"http://{self.host}:{self.port}"

    def _hardhat(self) -> str:
        binary = self.blockchain_dir / "node_modules" / ".bin" / "hardhat"
        if not binary.exists():
            raise DevChainError(f"{binary} is missing: run `make install` (npm ci in blockchain/) first")
        return str(binary)

    def start(self, timeout: float = 90.0) -> None:
        """Start ``hardhat node`` in its own session and wait until it answers JSON-RPC.

        Raises :class:`DevChainError` if the port is taken, the node exits, or it does not answer in time.
        """
        if not port_is_free(self.host, self.port):
            raise DevChainError(
                f"port {self.port} on {self.host} is taken; stop what listens there or choose another port"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self._process = subprocess.Popen(
            [self._hardhat(), "node", "--hostname", self.host, "--port", str(self.port)],
            cwd=self.blockchain_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise DevChainError(
                    f"hardhat node exited with code {self._process.returncode}; see {self.log_path}"
                )
            if rpc_chain_id(self.rpc_url, timeout=1.0) is not None:
                return
            time.sleep(0.25)
        self.stop()
        raise DevChainError(f"hardhat node did not answer on {self.rpc_url} within {timeout:.0f} s")

    def deploy(self, out: Path, timeout: float = 180.0, env: dict[str, str] | None = None) -> Deployments:
        """Run ``scripts/deploy.js`` against this node and load the deployments file it writes.

        ``env`` adds settings the deploy script reads (e.g. ``FEDLEDGER_GOV_VOTING_PERIOD``).
        """
        env = dict(
            os.environ,
            **(env or {}),
            FEDLEDGER_CHAIN_RPC_URL=self.rpc_url,
            FEDLEDGER_DEPLOYMENTS_OUT=str(out),
        )
        result = subprocess.run(
            [self._hardhat(), "run", "scripts/deploy.js", "--network", "localhost"],
            cwd=self.blockchain_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise DevChainError(f"deploy failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return Deployments.load(out)

    def stop(self) -> None:
        """Stop the node's whole process group (SIGTERM, then SIGKILL); a no-op if it is not running."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def wait(self) -> int:
        """Block until the node exits (``fedledger chain`` in the foreground)."""
        if self._process is None:
            raise DevChainError("the node is not running")
        return self._process.wait()

    def __enter__(self) -> DevChain:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
