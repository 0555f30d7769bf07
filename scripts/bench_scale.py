"""Issue 25 item 4: a round's close sharded by coordinate ranges across worker processes, each under a memory
limit it cannot exceed (``prlimit --as``), at sizes one worker cannot close.

What runs: the real sharded close (aggregator.worker.shards.compute_sharded, the platform's genesis rule
fltrust_guarded, chunked envelopes sealed and signed as the SDK does) with real Celery workers on a Redis
broker (results in Redis), blobs in a filesystem store; only the database and the chain are left out (the
close reads no more of them than its rows, built here). Each worker is ``prlimit --as=<limit> celery worker``
with one process and one BLAS thread; the coordinator (in production: the worker holding the round's lease)
is this process.

    .venv/bin/python scripts/bench_scale.py big --n 100 --d 20000000 --workers 4      # 8 GB of updates
    .venv/bin/python scripts/bench_scale.py big --n 1000 --d 2000000 --workers 4
    .venv/bin/python scripts/bench_scale.py scaling --n 100 --d 2000000 --repeats 3   # 1, 2, 4 workers
    .venv/bin/python scripts/bench_scale.py single --n 100 --d 20000000               # one worker, same limit
    .venv/bin/python scripts/bench_scale.py big --family mlp --hidden 1000 --classes 10 --n 100 --d 20000000
    .venv/bin/python scripts/bench_scale.py compare --family mlp --hidden 1000 --classes 10 --n 100 --d 1000000

Each prints its figures (time per phase, peak RSS per worker, the load average). The model is softmax
regression with ``classes`` classes and d / classes features, or (``--family mlp``) an MLP with ``hidden``
hidden units, ``classes`` classes and as many features as make about d parameters; the validation data are
synthetic (the close's cost does not depend on what they are).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from celery import Celery, group  # noqa: E402
from eth_account import Account  # noqa: E402

from aggregator.round.compute import RoundResult  # noqa: E402
from aggregator.round.sharding import TOLERANCE, plan_shards  # noqa: E402
from aggregator.worker import close as round_close  # noqa: E402
from aggregator.worker.close_inputs import Inputs  # noqa: E402
from aggregator.worker.shards import (  # noqa: E402
    COMBINE,
    DERIVE,
    STATISTICS,
    Domain,
    compute_sharded,
    shard_combine,
    shard_derive,
    shard_statistics,
)
from db.models import ModelVersion, Participant, Round, Update  # noqa: E402
from fedledger.crypto.chunked import coordinate_order, layout_hash, parse_head, seal_chunked  # noqa: E402
from fedledger.crypto.eip712 import sign_update  # noqa: E402
from fedledger.crypto.keys import KeyAlgorithm, generate_server_key  # noqa: E402
from fedledger.domain.blobstore import FilesystemBlobStore  # noqa: E402
from fedledger.models import init_mlp, init_softmax  # noqa: E402

DOMAIN = Domain(31337, "0x" + "22" * 20)
EXAMPLES = 240  # holdout: half root (the reference update), half validation
CHUNK = 1 << 16  # the SDK's default (FEDLEDGER_UPDATE_CHUNK_COORDS): 64 Ki coordinates per chunk
GB = 1024**3
BROKER = os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/7")  # a Redis of your own: BENCH_BROKER

app = Celery("bench_scale", broker=BROKER, backend=BROKER)
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1, result_expires=3600)


def _context(workdir: str) -> tuple[FilesystemBlobStore, dict[str, bytes], np.ndarray]:
    meta = json.loads((Path(workdir) / "meta.json").read_text())
    features = np.load(Path(workdir) / "validation.npy", mmap_mode="r")
    return (
        FilesystemBlobStore(Path(workdir) / "blobs"),
        {meta["key_id"]: meta["private_pem"].encode()},
        features,
    )


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@app.task(name="bench.statistics")
def statistics_task(job: dict[str, Any], workdir: str) -> dict[str, Any]:
    cpu = time.process_time()
    blobs, keys, features = _context(workdir)
    out = shard_statistics(job, blobs, keys, DOMAIN, features)
    out["cpu_s"] = time.process_time() - cpu
    return {**out, "host": socket.gethostname() + f":{os.getpid()}", "peak_rss_mb": _peak_rss_mb()}


@app.task(name="bench.derive")
def derive_task(job: dict[str, Any], workdir: str) -> dict[str, Any]:
    cpu = time.process_time()
    blobs, keys, features = _context(workdir)
    out = shard_derive(job, blobs, keys, DOMAIN, features)
    out["cpu_s"] = time.process_time() - cpu
    return {**out, "host": socket.gethostname() + f":{os.getpid()}", "peak_rss_mb": _peak_rss_mb()}


@app.task(name="bench.combine")
def combine_task(job: dict[str, Any], workdir: str) -> dict[str, Any]:
    cpu = time.process_time()
    blobs, keys, features = _context(workdir)
    out = shard_combine(job, blobs, keys, DOMAIN, features)
    out["cpu_s"] = time.process_time() - cpu
    return {**out, "host": socket.gethostname() + f":{os.getpid()}", "peak_rss_mb": _peak_rss_mb()}


# ---- data -------------------------------------------------------------------------------------------------


def model_of(family: str, features: int, classes: int, hidden: int) -> dict[str, np.ndarray]:
    """The round's base model: softmax regression, or an MLP (its He-scaled initial weights, fixed seed)."""
    if family == "mlp":
        return init_mlp(features, hidden, classes, np.random.default_rng(0))
    return init_softmax(features, classes)


def features_for(family: str, d: int, classes: int, hidden: int) -> int:
    """Input features that make a model of about d parameters."""
    if family == "mlp":  # hidden x (features + 1) + classes x (hidden + 1)
        return max(1, (d - classes * (hidden + 1) - hidden) // hidden)
    return max(1, (d - classes) // classes)


def build(
    workdir: Path,
    n: int,
    d: int,
    classes: int,
    chunk: int = CHUNK,
    seed: int = 0,
    family: str = "softmax",
    hidden: int = 0,
) -> dict[str, Any]:
    """n chunked, signed updates of a model of about d parameters, the holdout and the server key."""
    if (workdir / "meta.json").exists():
        meta: dict[str, Any] = json.loads((workdir / "meta.json").read_text())
        stored = (meta["n"], meta["d_requested"], meta["classes"], meta.get("chunk", CHUNK))
        model = (meta.get("family", "softmax"), meta.get("hidden", 0))
        if stored == (n, d, classes, chunk) and model == (family, hidden):
            return meta
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    features = features_for(family, d, classes, hidden)
    weights = model_of(family, features, classes, hidden)
    shapes = coordinate_order({k: v.shape for k, v in weights.items()})
    size = sum(int(np.prod(s)) for s in shapes.values())
    X = rng.random((EXAMPLES, features), dtype=np.float32)
    y = rng.integers(0, classes, EXAMPLES)
    np.save(workdir / "holdout_x.npy", X)
    np.save(workdir / "holdout_y.npy", y)
    from aggregator.round.server_update import server_data

    _, (validation, _) = server_data((X, y))
    np.save(workdir / "validation.npy", np.ascontiguousarray(validation))
    del X, validation
    key = generate_server_key(KeyAlgorithm.x25519)
    blobs = FilesystemBlobStore(workdir / "blobs")
    # Honest updates share a direction (a common signal plus each one's noise), as trained deltas do.
    signal = rng.standard_normal(size, dtype=np.float32) * np.float32(0.01)
    updates = []
    for _ in range(n):
        wallet = Account.create()
        row = signal + rng.standard_normal(size, dtype=np.float32) * np.float32(0.01)
        envelope = seal_chunked(
            row,
            key.public_pem,
            round_id=1,
            model_version=1,
            participant=wallet.address,
            num_samples=100,
            layout=layout_hash(shapes),
            chunk_coords=chunk,
        )
        signature = sign_update(
            wallet.key.hex(),
            chain_id=DOMAIN.chain_id,
            verifying_contract=DOMAIN.verifying_contract,
            round_id=1,
            model_version=1,
            payload_hash=parse_head(envelope).payload_hash,
            num_samples=100,
        )
        updates.append({"hash": blobs.put(envelope), "address": wallet.address, "signature": signature})
        del row, envelope
    meta = {
        "n": n,
        "d_requested": d,
        "d": size,
        "classes": classes,
        "family": family,
        "hidden": hidden,
        "chunk": chunk,
        "features": features,
        "key_id": key.key_id,
        "private_pem": key.private_pem.decode(),
        "updates": updates,
        "build_s": time.perf_counter() - started,
    }
    (workdir / "meta.json").write_text(json.dumps(meta))
    return meta


def inputs_of(
    workdir: Path, meta: dict[str, Any], params: dict[str, Any] | None = None
) -> tuple[Inputs, tuple[np.ndarray, np.ndarray]]:
    """The close's inputs as load() reads them from the database (detached rows), and the holdout. ``params``:
    the round's parameter snapshot (none: the genesis values, fltrust_guarded)."""
    opened = datetime(2026, 12, 1, tzinfo=UTC)
    weights = model_of(
        meta.get("family", "softmax"), meta["features"], meta["classes"], meta.get("hidden", 0)
    )
    participants, updates = {}, []
    for i, u in enumerate(meta["updates"]):
        participants[i + 1] = Participant(id=i + 1, address=u["address"], reputation=50.0)
        updates.append(
            Update(
                id=i + 1,
                round_id=1,
                participant_id=i + 1,
                ciphertext_hash=u["hash"],
                num_samples=100,
                submitted_at=opened + timedelta(minutes=1),
                signature=u["signature"],
            )
        )
    round_ = Round(
        id=1,
        opened_at=opened,
        deadline=opened + timedelta(hours=1),
        extensions=0,
        quorum=3,
        params=params or {},
    )
    model = ModelVersion(id=1, spec={k: list(v.shape) for k, v in weights.items()})
    inputs = Inputs(
        round_, updates, participants, weights, model, {meta["key_id"]: meta["private_pem"].encode()}, 0
    )
    holdout = (np.load(workdir / "holdout_x.npy"), np.load(workdir / "holdout_y.npy"))
    return inputs, holdout


# ---- workers ----------------------------------------------------------------------------------------------


class Workers:
    """``count`` Celery worker processes, each under ``prlimit --as=limit``, one process and BLAS thread each."""

    def __init__(self, count: int, limit: int, logdir: Path) -> None:
        self.processes = []
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "BENCH_BROKER": BROKER}
        env["PYTHONPATH"] = f"{ROOT}:{ROOT / 'scripts'}"
        for i in range(count):
            log = (logdir / f"worker-{i}.log").open("wb")
            command = [
                "prlimit",
                f"--as={limit}",
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bench_scale",
                "worker",
                "--concurrency=1",
                "--pool=solo",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                f"--hostname=shard{i}@%h",
                "--loglevel=WARNING",
            ]
            self.processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
        time.sleep(3)
        for _ in range(60):
            if len(app.control.ping(timeout=1.0)) >= count:
                return
        raise RuntimeError("the bench workers did not start; see their logs")

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=30)


def runner(workdir: Path, seen: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
    def run(pass_name: str, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        task = {STATISTICS: statistics_task, DERIVE: derive_task, COMBINE: combine_task}[pass_name]
        results: list[dict[str, Any]] = (
            group(task.s(p, str(workdir)) for p in payloads).apply_async().get(timeout=3600)
        )
        seen.extend(
            {"pass": pass_name, **{k: r[k] for k in ("host", "peak_rss_mb", "cpu_s")}} for r in results
        )
        return results

    return run


def sharded_close(
    workdir: Path, meta: dict[str, Any], shards: int, block_bytes: int, params: dict[str, Any] | None = None
) -> tuple[dict[str, Any], RoundResult]:
    """One sharded close: its phases, the workers' peak RSS, the coordinator's; and its result."""
    app.control.purge()
    inputs, holdout = inputs_of(workdir, meta, params)
    seen: list[dict[str, Any]] = []
    chunk = int(meta.get("chunk", CHUNK))
    ranges = plan_shards(meta["d"], meta["n"], 0, shards, chunk)
    started = time.perf_counter()
    cpu = time.process_time()
    result = compute_sharded(
        inputs,
        FilesystemBlobStore(workdir / "blobs"),
        holdout,
        round_close.round_rng(1),
        inputs.round.deadline,
        ranges,
        runner(workdir, seen),
        block_bytes,
        chunk,
    )
    total = time.perf_counter() - started
    assert isinstance(result, RoundResult) and result.record is not None, result
    peaks: dict[str, float] = {}
    for s in seen:
        peaks[s["host"]] = max(peaks.get(s["host"], 0.0), s["peak_rss_mb"])
    durations = result.record.durations_ms
    summary = {
        "status": result.status.value,
        "kept": len(result.kept),
        "total_s": total,
        "statistics_pass_s": durations["shard_statistics_ms"] / 1e3,
        "derive_pass_s": durations["shard_derive_ms"] / 1e3,
        "combine_pass_s": durations["shard_combine_ms"] / 1e3,
        "reference_s": durations["reference_ms"] / 1e3,
        "shard_read_s_max": durations["shard_read_ms_max"] / 1e3,
        "aggregate_and_scores_s": (durations.get("aggregate_ms", 0) + durations.get("score_ms", 0)) / 1e3,
        # What the coordinator spent between and after the passes (its steps: sums, the rule, compute_round).
        "coordinator_s": total
        - sum(durations.get(f"shard_{name}_ms", 0.0) for name in ("statistics", "derive", "combine")) / 1e3,
        "worker_peak_rss_mb": sorted(peaks.values()),
        # CPU seconds: every shard task summed, and this process (the coordinator's steps).
        "shard_cpu_s": sum(s["cpu_s"] for s in seen),
        "coordinator_cpu_s": time.process_time() - cpu,
        "coordinator_peak_rss_mb": _peak_rss_mb(),
    }
    return summary, result


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---- commands ---------------------------------------------------------------------------------------------


def cmd_big(args: argparse.Namespace) -> None:
    workdir = Path(args.workdir)
    meta = build(
        workdir, args.n, args.d, args.classes, args.chunk_coords, family=args.family, hidden=args.hidden
    )
    gb = meta["n"] * meta["d"] * 4 / 1e9
    model = f"{args.family} ({meta['features']} features"
    model += f", {args.hidden} hidden units" if args.family == "mlp" else ""
    model += f", {meta['classes']} classes)"
    print(
        f"n={meta['n']} d={meta['d']} {model} ({gb:.2f} GB of float32 updates; built in {meta['build_s']:.0f} s)"
    )
    workers = Workers(args.workers, int(args.limit_gb * GB), workdir)
    try:
        out, _ = sharded_close(workdir, meta, args.workers, args.block_mb << 20)
    finally:
        workers.stop()
    print(json.dumps(out, indent=1))
    print(f"load average: {load()}")


def cmd_compare(args: argparse.Namespace) -> None:
    """The sharded close on ``workers`` workers against the single-worker close of the same round (this
    process, no memory limit: a size one worker can close), in the terms of sharding.TOLERANCE."""
    workdir = Path(args.workdir)
    meta = build(
        workdir, args.n, args.d, args.classes, args.chunk_coords, family=args.family, hidden=args.hidden
    )
    print(f"n={meta['n']} d={meta['d']} {args.family} ({meta['n'] * meta['d'] * 4 / 1e9:.2f} GB of updates)")
    params = {"strategy": args.strategy} if args.strategy else None
    workers = Workers(args.workers, int(args.limit_gb * GB), workdir)
    try:
        out, sharded = sharded_close(workdir, meta, args.workers, args.block_mb << 20, params)
    finally:
        workers.stop()
    inputs, holdout = inputs_of(workdir, meta, params)
    started = time.perf_counter()
    single = round_close.compute(
        inputs,
        FilesystemBlobStore(workdir / "blobs"),
        holdout,
        round_close.round_rng(1),
        inputs.round.deadline,
    )
    single_s = time.perf_counter() - started
    assert single.new_weights is not None and sharded.new_weights is not None
    rtol, atol = TOLERANCE["weights_rtol"], TOLERANCE["weights_atol"]
    # <= 1: within the tolerance the tests check (|sharded - single| <= atol + rtol |single|).
    weights_ratio = max(
        float(np.max(np.abs(sharded.new_weights[k] - v) / (atol + rtol * np.abs(v))))
        for k, v in single.new_weights.items()
    )

    def decisions(r: RoundResult) -> list[tuple[int, bool, bool, bool]]:
        return [(c.update_id, c.selected, c.kept, c.byzantine) for c in r.clients]

    score_diff = max(
        abs(getattr(a, s) - getattr(b, s))
        for a, b in zip(single.clients, sharded.clients, strict=True)
        for s in ("quality", "timeliness", "honesty", "fitness")
    )
    reward_diff = max(
        abs(a.reward_wei - b.reward_wei) / max(a.reward_wei, 1)
        for a, b in zip(single.clients, sharded.clients, strict=True)
    )
    comparison = {
        "strategy": inputs.round.params.get("strategy", "fltrust_guarded (genesis)"),
        "sharded_s": out["total_s"],
        "single_s": single_s,
        "kept": [len(single.kept), len(sharded.kept)],
        "same_decisions": decisions(single) == decisions(sharded) and single.activate == sharded.activate,
        "weights_error_over_tolerance": weights_ratio,
        "max_score_difference_points": score_diff,
        "max_reward_relative_difference": reward_diff,
        "tolerance": TOLERANCE,
        "sharded": out,
    }
    print(json.dumps(comparison, indent=1))
    print(f"load average: {load()}")


def cmd_scaling(args: argparse.Namespace) -> None:
    """1, 2, 4 workers (each its own pool, started before and stopped after each run, outside its timing)
    and the single-worker close, interleaved after a warm-up round."""
    workdir = Path(args.workdir)
    meta = build(
        workdir, args.n, args.d, args.classes, args.chunk_coords, family=args.family, hidden=args.hidden
    )
    print(f"n={meta['n']} d={meta['d']} ({meta['n'] * meta['d'] * 4 / 1e9:.2f} GB of updates)")
    counts = [int(c) for c in args.counts.split(",")]
    times: dict[str, list[float]] = {str(c): [] for c in counts}
    times["single"] = []
    phases: dict[str, list[dict[str, Any]]] = {str(c): [] for c in counts}
    for repeat in range(args.repeats + 1):  # the first round is the warm-up
        for c in counts:
            workers = Workers(c, int(args.limit_gb * GB), workdir)
            try:
                out, _ = sharded_close(workdir, meta, c, args.block_mb << 20)
            finally:
                workers.stop()
            if repeat:
                times[str(c)].append(out["total_s"])
                phases[str(c)].append(out)
        inputs, holdout = inputs_of(workdir, meta)
        started = time.perf_counter()
        single = round_close.compute(
            inputs,
            FilesystemBlobStore(workdir / "blobs"),
            holdout,
            round_close.round_rng(1),
            inputs.round.deadline,
        )
        assert single.status.value == "aggregated"
        if repeat:
            times["single"].append(time.perf_counter() - started)
    for name, values in times.items():
        label = "single-worker close (one process)" if name == "single" else f"sharded, {name} worker(s)"
        extra = ""
        if name in phases:
            runs = phases[name]
            extra = (
                f"  statistics pass {statistics.median(r['statistics_pass_s'] for r in runs):.1f} s,"
                f" combine pass {statistics.median(r['combine_pass_s'] for r in runs):.1f} s,"
                f" worker peak RSS {max(max(r['worker_peak_rss_mb']) for r in runs):.0f} MB"
            )
        print(
            f"{label:36s} median {statistics.median(values):6.1f} s  min {min(values):6.1f}  max {max(values):6.1f}"
            + extra
        )
    print(f"peak RSS of this process (coordinator and single-worker close): {_peak_rss_mb():.0f} MB")
    print(f"load average: {load()}")


def cmd_single(args: argparse.Namespace) -> None:
    """The single-worker close of the big round under the same memory limit (run as its own process)."""
    workdir = Path(args.workdir)
    meta = build(
        workdir, args.n, args.d, args.classes, args.chunk_coords, family=args.family, hidden=args.hidden
    )
    if os.environ.get("BENCH_LIMITED") != "1":
        command = ["prlimit", f"--as={int(args.limit_gb * GB)}", sys.executable, __file__, *sys.argv[1:]]
        started = time.perf_counter()
        done = subprocess.run(
            command, env={**os.environ, "BENCH_LIMITED": "1"}, capture_output=True, text=True
        )
        tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or [""]
        print(
            f"single-worker close under {args.limit_gb:g} GB: exit {done.returncode} after "
            f"{time.perf_counter() - started:.0f} s: {tail[0]}"
        )
        print(f"load average: {load()}")
        return
    inputs, holdout = inputs_of(workdir, meta)
    started = time.perf_counter()
    try:
        result = round_close.compute(
            inputs,
            FilesystemBlobStore(workdir / "blobs"),
            holdout,
            round_close.round_rng(1),
            inputs.round.deadline,
        )
    except MemoryError:
        print(f"MemoryError after {time.perf_counter() - started:.0f} s (peak RSS {_peak_rss_mb():.0f} MB)")
        sys.exit(3)
    print(
        f"closed: {result.status.value} in {time.perf_counter() - started:.0f} s, peak RSS {_peak_rss_mb():.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    commands = (("big", cmd_big), ("scaling", cmd_scaling), ("single", cmd_single), ("compare", cmd_compare))
    for name, handler in commands:
        p = sub.add_parser(name)
        p.set_defaults(handler=handler)
        p.add_argument("--n", type=int, default=100)
        p.add_argument("--d", type=int, default=20_000_000)
        p.add_argument("--classes", type=int, default=100)
        p.add_argument("--workers", type=int, default=4)
        p.add_argument("--limit-gb", type=float, default=4.0)
        p.add_argument("--block-mb", type=int, default=64)
        p.add_argument("--chunk-coords", type=int, default=CHUNK)
        p.add_argument("--workdir", default=str(ROOT / "var" / "bench-scale"))
        p.add_argument("--counts", default="1,2,4")
        p.add_argument("--family", choices=("softmax", "mlp"), default="softmax")
        p.add_argument("--strategy", default="", help="compare: the round's rule (default: the genesis rule)")
        p.add_argument("--hidden", type=int, default=1000, help="the MLP's hidden units (--family mlp)")
        p.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    suffix = "" if args.chunk_coords == CHUNK else f"-k{args.chunk_coords}"
    if args.family == "mlp":
        suffix += f"-mlp{args.hidden}"
    else:
        args.hidden = 0
    args.workdir = str(Path(args.workdir) / f"n{args.n}-d{args.d}-c{args.classes}{suffix}")
    args.handler(args)


if __name__ == "__main__":
    main()
