"""A close split by coordinate ranges across workers (issue 25 item 3): the shards' reads and passes, and the
coordinator that runs :func:`aggregator.round.compute.compute_round` on what they send back.

The coordinator (the worker holding the round's lease) writes the round's extra rows (the server's reference
update, the last public change) and the base model as raw float32 blobs, then runs two or three passes over
the shards (Celery groups on the round's broker, :mod:`aggregator.worker.tasks`):

1. statistics: each shard reads only its coordinate range of every update (two ranged reads of a chunked
   envelope: head, then its chunks; a version 1 envelope is read and opened whole, then sliced), checks the
   organization's signature over the chunked head and each chunk against it, and sends its partial Gram
   matrix and partial first-layer responses, with the MLP's output-layer coordinates in its range
   (:class:`aggregator.round.sharding.ShardStatistics`). The responses are those of the validation examples
   the per-row scores use: above the score budget (:mod:`aggregator.scoring.budget`) its seeded subsample,
   known before the pass (it hashes the round and its updates' ids and arrival times);
2. derive (coordinate-wise rules only): each shard computes the rule's row over its range
   (:func:`aggregator.round.sharding.derive`), keeps it as temporary blobs and sends its partial inner
   products and responses (:class:`aggregator.round.sharding.DerivedStatistics`);
3. combine: the coordinator runs the round's rule in E's space (cheap: k <= n + 4 coordinates) as
   compute_round will, and each shard writes its coordinates of that aggregate (a combination of the rows,
   derived ones included) as a blob and, above the score budget, sends the aggregate's and the reference's
   responses on every validation example: what the close's decision (line search, descent floor) evaluates.

Then compute_round runs once, and the new model is assembled from the base, the shards' aggregate and the
reference by the decision's step. One exception: after a stalled round, when the decision refuses the
rule's aggregate and the server's step, it searches a second candidate (the norm-bounded mean of the
counted rows, :func:`aggregator.round.compute._fallback`), another combination of the rows; the coordinator
then runs the combine pass once more for it (its coordinates, and above the score budget its responses on
every example) and compute_round again with it known, so that the sharded close keeps what the single
close keeps; likewise the guarded rule's wider-clip candidate (an option, off in the platform:
:data:`aggregator.strategies.fltrust_guarded.WIDER_CLIP_Z`). An update that fails to open in any shard is
rejected (with the reason, as the single-worker close rejects it) and its rows are dropped from the sums
(above the score budget the statistics pass runs again when that changes the subsample's seed). Nothing is written to the database
before the commit, as in the single-worker close: a coordinator killed mid-way leaves the round to the next
lease holder.
"""

from __future__ import annotations

import copy
import io
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np

from aggregator import strategies
from aggregator.errors import AggregationError, InvalidRoundParams, PrivacyBudgetExceeded
from aggregator.round.compute import (
    ClientMeta,
    CloseStatus,
    RoundInputs,
    RoundResult,
    SampleWeights,
    compute_round,
)
from aggregator.round.dp import PrivacyAccountant, gaussian_noise_std
from aggregator.round.params import RoundParams
from aggregator.round.server_update import reference_update, server_data
from aggregator.round.sharding import (
    MAX_RESPONSE_BYTES,
    Derivation,
    DerivedStatistics,
    EmbeddedBatch,
    Embedding,
    OutsideSpan,
    Plan,
    ShardedRule,
    ShardStatistics,
    augment,
    combine,
    derive,
    embedded_evaluation,
    embedded_inputs,
    noise_seed,
    partial_responses,
    plan_derivations,
    row_weights,
    span_coefficients,
    why_not_shardable,
)
from aggregator.worker.close_inputs import Inputs, public_change
from aggregator.worker.temporaries import get_temporary, get_temporary_range, put_temporary
from fedledger.crypto.chunked import ChunkOpener, coordinate_order, is_chunked, layout_hash, read_head
from fedledger.crypto.eip712 import recover_update_signer
from fedledger.crypto.envelope import open_envelope
from fedledger.crypto.errors import CryptoError
from fedledger.domain.blobstore import BlobStore
from fedledger.payload import UpdateFormatError, decode_update, flatten, parameter_count, unflatten

# (task name, one payload per shard) -> each shard's result, in the payloads' order.
ShardRunner = Callable[[str, list[dict[str, Any]]], list[dict[str, Any]]]
STATISTICS = "statistics"
DERIVE = "derive"
COMBINE = "combine"
# Changes beyond the rule's aggregate a close may ask the combine pass for: the decision evaluates at most
# two (the guarded rule's wider-clip candidate, an option, and a stalled round's second candidate); a bound,
# so that a defect ends the close with an error, not in a loop.
MAX_EXTRA_CHANGES = 2
# A shard reads its range in blocks of about this many bytes of float32 rows, so that its memory is bounded
# by the block, not by its range (a job may say otherwise: "block_bytes").
BLOCK_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Domain:
    """The EIP-712 domain the organizations signed their updates in (the ledger's)."""

    chain_id: int
    verifying_contract: str


def round_params(inputs: Inputs) -> RoundParams:
    """The round's typed parameter snapshot with its quorum (as the single-worker close types it)."""
    params = RoundParams.from_snapshot(inputs.round.params)
    return replace(params, min_participants=max(params.min_participants, inputs.round.quorum))


def read_rows(
    job: Mapping[str, Any],
    blobs: BlobStore,
    private_keys: Mapping[str, bytes],
    domain: Domain,
    openers: dict[str, ChunkOpener] | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """Rows of the shard's range: one per update (zeros for one that failed, with the reason), then the
    extra rows (raw float32 blobs). Reads only the range of a chunked envelope. ``openers``: the chunked
    envelopes whose heads this shard already checked (by blob), kept across its blocks."""
    openers = {} if openers is None else openers
    start, stop = int(job["start"]), int(job["stop"])
    spec = coordinate_order(job["spec"])
    updates = job["updates"]
    rows = np.zeros((len(updates) + len(job["extra"]), stop - start), dtype=np.float32)
    failed: dict[int, str] = {}
    for i, u in enumerate(updates):
        try:
            rows[i] = _read_update(u, blobs, private_keys, domain, spec, start, stop, openers)
        except (CryptoError, UpdateFormatError, KeyError) as exc:
            failed[int(u["id"])] = f"{type(exc).__name__}: {exc}"
    for j, digest in enumerate(job["extra"]):
        raw = get_temporary_range(blobs, digest, 4 * start, 4 * (stop - start))
        rows[len(updates) + j] = np.frombuffer(raw, dtype="<f4")
    return rows, failed


def _read_update(
    u: Mapping[str, Any],
    blobs: BlobStore,
    private_keys: Mapping[str, bytes],
    domain: Domain,
    spec: dict[str, tuple[int, ...]],
    start: int,
    stop: int,
    openers: dict[str, ChunkOpener],
) -> np.ndarray:
    digest = u["hash"]

    def read(offset: int, size: int) -> bytes:
        return blobs.get_range(digest, offset, size)

    if digest in openers:
        return openers[digest].open_range(read, start, stop)
    if is_chunked(blobs.head(digest, 4)):
        head = read_head(read)
        header = head.header
        if header.layout != layout_hash(spec):
            raise UpdateFormatError("the chunked update's layout is not the model's")
        if header.participant != u["participant"] or header.round_id != u["round_id"]:
            raise UpdateFormatError("envelope header does not match the recorded submission")
        # What this worker reads is what the organization signed: the head's hash, and each chunk's in it.
        signer = recover_update_signer(
            u["signature"],
            chain_id=domain.chain_id,
            verifying_contract=domain.verifying_contract,
            round_id=header.round_id,
            model_version=header.model_version,
            payload_hash=head.payload_hash,
            num_samples=header.num_samples,
        )
        if signer != u["participant"]:
            raise UpdateFormatError("the chunked envelope's head is not the one its organization signed")
        openers[digest] = ChunkOpener(head, private_keys)
        return openers[digest].open_range(read, start, stop)
    header1, plaintext = open_envelope(blobs.get(digest), private_keys)
    if header1.participant != u["participant"] or header1.round_id != u["round_id"]:
        raise UpdateFormatError("envelope header does not match the recorded submission")
    vector: np.ndarray = flatten(decode_update(plaintext, spec), spec)[start:stop]
    return vector


def blocks(job: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The job's range cut into blocks of about ``block_bytes`` of rows (each a job of its own range). With
    ``align`` (the envelopes' coordinates per chunk) a block is whole chunks, at least one, and its edges are
    chunk edges: a chunk is read and decrypted by one block only (narrower blocks read each chunk once per
    block, 4x at 1,000 updates with 64 MiB blocks and 64 Ki-coordinate chunks), at the price of a block of at
    least one chunk of every row."""
    start, stop = int(job["start"]), int(job["stop"])
    height = len(job["updates"]) + len(job["extra"])
    width = max(1, int(job.get("block_bytes", BLOCK_BYTES)) // (4 * max(height, 1)))
    align = int(job.get("align", 1))
    if align > 1:
        width = max(1, width // align) * align
    edges = [start, *range((start // width + 1) * width, stop, width), stop]
    return [{**job, "start": a, "stop": b} for a, b in zip(edges[:-1], edges[1:], strict=True)]


def score_features(job: Mapping[str, Any], features: np.ndarray) -> np.ndarray:
    """The validation examples the rows' responses are of: the per-row scores' (``job["examples"]``, the
    budget's subsample), or every one (None)."""
    examples = job.get("examples")
    chosen: np.ndarray = features if examples is None else features[np.asarray(examples, dtype=np.int64)]
    return chosen


def shard_statistics(
    job: Mapping[str, Any],
    blobs: BlobStore,
    private_keys: Mapping[str, bytes],
    domain: Domain,
    features: np.ndarray,
) -> dict[str, Any]:
    """The first pass of one shard: its partial statistics and the updates that failed in its range, read a
    block at a time."""
    spec = coordinate_order(job["spec"])
    features = score_features(job, features)
    total = ShardStatistics.zeros(spec, len(job["updates"]) + len(job["extra"]), int(features.shape[0]))
    failed: dict[int, str] = {}
    read_ms = compute_ms = 0.0
    openers: dict[str, ChunkOpener] = {}
    for block in blocks(job):
        started = time.perf_counter()
        rows, block_failed = read_rows(block, blobs, private_keys, domain, openers)
        failed.update(block_failed)
        read_ms += (time.perf_counter() - started) * 1e3
        started = time.perf_counter()
        total.add(spec, features, int(block["start"]), rows)
        compute_ms += (time.perf_counter() - started) * 1e3
    return {
        "statistics": _store(blobs, job, {"gram": total.gram, "scores": total.scores, "heads": total.heads}),
        "failed": {str(k): v for k, v in failed.items()},
        "read_ms": read_ms,
        "compute_ms": compute_ms,
    }


def shard_derive(
    job: Mapping[str, Any],
    blobs: BlobStore,
    private_keys: Mapping[str, bytes],
    domain: Domain,
    features: np.ndarray,
) -> dict[str, Any]:
    """The second pass of one shard (coordinate-wise rules): the derived rows over its range, a block at a
    time, each block's kept as a temporary blob for the combine (``pieces``: start, stop, digest), and
    their partial statistics."""
    spec = coordinate_order(job["spec"])
    features = score_features(job, features)
    derivations = job["derivations"]
    total: DerivedStatistics | None = None
    pieces: list[list[Any]] = []
    openers: dict[str, ChunkOpener] = {}
    try:
        for block in blocks(job):
            rows, _ = read_rows(block, blobs, private_keys, domain, openers)
            derived = derive(rows, derivations, int(block["start"]))
            start, stop = int(block["start"]), int(block["stop"])
            pieces.append([start, stop, put_temporary(blobs, int(job["round_id"]), derived)])
            stats = DerivedStatistics.of(spec, features, start, rows, derived)
            total = stats if total is None else total + stats
    except BaseException:
        for _, _, digest in pieces:
            blobs.delete(digest)
        raise
    assert total is not None  # a range is never empty
    return {
        "statistics": _store(
            blobs,
            job,
            {"cross": total.cross, "gram": total.gram, "scores": total.scores, "heads": total.heads},
        ),
        "pieces": pieces,
    }


def shard_combine(
    job: Mapping[str, Any],
    blobs: BlobStore,
    private_keys: Mapping[str, bytes],
    domain: Domain,
    features: np.ndarray,
) -> dict[str, Any]:
    """The last pass of one shard: its coordinates of the rule's aggregate (``weights`` over Y's rows, then
    the derived rows the second pass kept in ``pieces``, the same blocks), written as a raw float32 blob;
    with ``responses`` (above the score budget), the partial first-layer responses on every validation
    example of the aggregate and of the reference (Y's row after the updates), as a statistics blob."""
    spec = coordinate_order(job["spec"])
    weights = np.asarray(job["weights"], dtype=np.float64)
    pieces = {int(start): (int(stop), digest) for start, stop, digest in job.get("pieces", [])}
    reference = len(job["updates"])
    known = ShardStatistics.zeros(spec, 2, int(features.shape[0])) if job.get("responses") else None
    parts = []
    openers: dict[str, ChunkOpener] = {}
    for block in blocks(job):
        rows, _ = read_rows(block, blobs, private_keys, domain, openers)
        start, stop = int(block["start"]), int(block["stop"])
        if pieces:
            piece_stop, digest = pieces[start]
            assert piece_stop == stop, "the second pass cut the range into other blocks"
            derived = np.frombuffer(get_temporary(blobs, digest), dtype="<f4").reshape(-1, stop - start)
            rows = np.concatenate([rows, derived])
        part = combine(rows, weights, np.zeros(stop - start, dtype=np.float32))
        if known is not None:
            partial_responses(
                spec, features, start, np.stack([part, rows[reference]]), (known.scores, known.heads)
            )
        parts.append(part)
    out: dict[str, Any] = {"digest": put_temporary(blobs, int(job["round_id"]), np.concatenate(parts))}
    if known is not None:
        out["statistics"] = _store(blobs, job, {"scores": known.scores})
    return out


@dataclass(frozen=True)
class Pass:
    """The next pass of a sharded close: the shard task to run on each payload, and the close's state (JSON)
    that :func:`advance` continues from with their results (in the payloads' order)."""

    name: str
    payloads: list[dict[str, Any]]
    state: dict[str, Any]


def compute_sharded(
    inputs: Inputs,
    blobs: BlobStore,
    holdout: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator,
    now: datetime,
    ranges: Sequence[tuple[int, int]],
    run: ShardRunner,
    block_bytes: int = BLOCK_BYTES,
    align: int = 1,
    max_response_bytes: int = MAX_RESPONSE_BYTES,
) -> RoundResult | str:
    """The close's computation over ``ranges``, each pass run by ``run`` and waited for: a
    :class:`RoundResult` as the single-worker :func:`aggregator.worker.close.compute` gives, or why this
    round cannot be sharded (the caller then closes it on one worker). The platform's worker does not wait:
    it sends each pass as a Celery chord whose callback calls :func:`advance` (aggregator.worker.tasks)."""
    step: Pass | RoundResult | str = begin(
        inputs, blobs, holdout, ranges, block_bytes, align, max_response_bytes
    )
    while isinstance(step, Pass):
        try:
            results = run(step.name, step.payloads)
        except BaseException:
            discard(blobs, step.state)
            raise
        step = advance(inputs, blobs, holdout, rng, now, step.state, results)
    return step


def begin(
    inputs: Inputs,
    blobs: BlobStore,
    holdout: tuple[np.ndarray, np.ndarray],
    ranges: Sequence[tuple[int, int]],
    block_bytes: int = BLOCK_BYTES,
    align: int = 1,
    max_response_bytes: int = MAX_RESPONSE_BYTES,
) -> Pass | str:
    """The first pass of the close over ``ranges`` (its extra rows and base model written as temporary
    blobs), or why this round cannot be sharded (``max_response_bytes``: the bound on the summed responses,
    :func:`aggregator.round.sharding.why_not_shardable`)."""
    spec = inputs.spec
    try:
        params = round_params(inputs)
    except InvalidRoundParams:
        return "the round's parameters are invalid (the single-worker close fails it with the reason)"
    _, (features, _) = server_data(holdout)
    # The per-row scores' examples as compute_round will draw them if every update opens (else the
    # statistics pass runs again with the subsample of the updates that did: see advance).
    examples = score_examples(inputs, params, int(features.shape[0]))
    # The rows the coordinator sums responses of: the updates, the reference and public change, and up to
    # two derived rows (a coordinate-wise rule's, DP's noise), on the scores' examples.
    reason = why_not_shardable(
        params,
        spec,
        len(inputs.updates) + 4,
        int(features.shape[0]) if examples is None else len(examples),
        max_response_bytes,
    )
    if reason is not None:
        return reason
    started = time.perf_counter()
    root, _ = server_data(holdout)
    reference = reference_update(inputs.weights, list(spec), root, inputs.round.id)
    if reference is None:
        return "the server has no reference update to score against"
    change = public_change(inputs)
    reference_ms = (time.perf_counter() - started) * 1e3
    round_id = inputs.round.id
    extra = [
        put_temporary(blobs, round_id, v) for v in [reference] + ([change] if change is not None else [])
    ]
    base = put_temporary(blobs, round_id, flatten(inputs.weights, spec))
    updates = [
        {
            "id": u.id,
            "hash": u.ciphertext_hash,
            "participant": inputs.participants[u.participant_id].address,
            "round_id": u.round_id,
            "signature": u.signature,
        }
        for u in inputs.updates
    ]
    job: dict[str, Any] = {
        "block_bytes": block_bytes,
        "align": align,
        "round_id": round_id,
        "spec": {k: list(v) for k, v in spec.items()},
        "updates": updates,
        "extra": extra,
        "examples": examples,
    }
    state: dict[str, Any] = {
        "job": job,
        "ranges": [list(r) for r in ranges],
        "base": base,
        "has_change": change is not None,
        "temporary": [*extra, base],
        "durations_ms": {"reference_ms": reference_ms},
        "sent_at": time.time(),
    }
    return Pass(
        STATISTICS, [{**job, "start": a, "stop": b} for a, b in ranges], {**state, "stage": STATISTICS}
    )


def discard(blobs: BlobStore, state: Mapping[str, Any], results: Sequence[Mapping[str, Any]] = ()) -> None:
    """Delete the close's temporary blobs, and those a pass's ``results`` name (its shards' statistics,
    parts and pieces) when the close stops before taking them in (idempotent)."""
    named = [r[key] for r in results for key in ("statistics", "digest") if key in r]
    named += [piece[2] for r in results for piece in r.get("pieces", [])]
    for digest in [*state.get("temporary", []), *named]:
        blobs.delete(digest)


def score_examples(
    inputs: Inputs, params: RoundParams, examples: int, failed: Collection[int] = ()
) -> list[int] | None:
    """The validation examples the close's per-row scores use when the updates ``failed`` are rejected
    (None: every one): what compute_round draws (``RoundInputs.score_sample``: the round's seed over the
    valid updates, the budget judged on the real model's size)."""
    clients, rejected, _ = _clients(inputs, failed)
    round_inputs = inputs.round_inputs(
        params, clients=clients, deltas=np.zeros((len(clients), 0)), rejected=rejected, holdout=None
    )
    size = parameter_count(inputs.spec)
    chosen = replace(round_inputs, model_size=size).score_sample(examples)
    return None if chosen is None else [int(i) for i in chosen]


def _clients(
    inputs: Inputs, failed: Collection[int]
) -> tuple[tuple[ClientMeta, ...], tuple[tuple[ClientMeta, str], ...], list[int]]:
    """The valid updates' metadata, the rejected ones' with their reasons (``failed``: update id -> reason,
    or ids), and the valid updates' indices among Y's rows."""
    reasons = failed if isinstance(failed, Mapping) else dict.fromkeys(failed, "")
    clients: list[ClientMeta] = []
    rejected: list[tuple[ClientMeta, str]] = []
    keep: list[int] = []
    for i, u in enumerate(inputs.updates):
        participant = inputs.participants[u.participant_id]
        meta = ClientMeta(
            u.id, participant.id, participant.address, u.num_samples, u.submitted_at, participant.reputation
        )
        if u.id in reasons:
            rejected.append((meta, reasons[u.id]))
        else:
            clients.append(meta)
            keep.append(i)
    return tuple(clients), tuple(rejected), keep


def advance(
    inputs: Inputs,
    blobs: BlobStore,
    holdout: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator,
    now: datetime,
    state: dict[str, Any],
    results: list[dict[str, Any]],
) -> Pass | RoundResult:
    """The close after the pass ``state["stage"]`` returned ``results``: the next pass, or the round's result
    (its temporary blobs then deleted). Everything it decides is recomputed from ``inputs``, the state and
    the blobs it names, so it may run in any worker; ``rng`` is only copied (the round's generator, as given
    to every step). compute_round runs once, after the combine pass (twice in a round that keeps a stalled
    federation's second candidate: see the module docstring)."""
    state = {**state, "temporary": list(state["temporary"])}
    stage = state.pop("stage")
    key = f"shard_{stage}_ms"
    state["durations_ms"] = {
        **state["durations_ms"],
        key: state["durations_ms"].get(key, 0.0) + (time.time() - state["sent_at"]) * 1e3,
    }
    try:
        if stage == STATISTICS:
            state["failed"] = {k: v for r in results for k, v in r["failed"].items()}
            state["read_ms_max"] = max(float(r["read_ms"]) for r in results)
            summed = _sum(blobs, state, results)
            _, (features, _) = server_data(holdout)
            failed = {int(k) for k in state["failed"]}
            examples = score_examples(inputs, round_params(inputs), int(features.shape[0]), failed)
            if examples != state["job"]["examples"]:
                # An update failed to open: the scores' subsample is seeded by the valid updates only, so
                # the rows' responses are computed again on it (a rejection is rare: a tampered envelope).
                del summed
                state["job"] = {**state["job"], "examples": examples}
                return _pass(STATISTICS, state, [{} for _ in state["ranges"]])
            state["statistics"] = _keep(blobs, state, summed)
            state["durations_ms"].setdefault("shard_derive_ms", 0.0)
        elif stage == DERIVE:
            pieces = [r["pieces"] for r in results]
            state["temporary"] += [digest for shard in pieces for _, _, digest in shard]
            state["pieces"] = pieces
            state["derived"] = _keep(blobs, state, _sum(blobs, state, results))
        elif "aggregate" not in state:
            assert stage == COMBINE
            state["aggregate"] = [r["digest"] for r in results]
            state["temporary"] += state["aggregate"]
            if state["job"]["examples"] is not None:
                state["known"] = _keep(blobs, state, _sum(blobs, state, results))
        else:  # one more change the decision asked for (a second or wider-clip candidate)
            assert stage == COMBINE
            digests = [r["digest"] for r in results]
            state["temporary"] += digests
            extra: dict[str, Any] = {"change": state.pop("pending"), "parts": digests, "known": None}
            if state["job"]["examples"] is not None:
                extra["known"] = _keep(blobs, state, _sum(blobs, state, results))
            state["extra_changes"] = [*state.get("extra_changes", []), extra]
        decision = _decide(inputs, blobs, holdout, copy.deepcopy(rng), now, state)
        if decision.derivations:
            extra = {"derivations": decision.derivations}
            return _pass(DERIVE, state, [extra for _ in state["ranges"]])
        if decision.weights is not None:
            if decision.pending is not None:
                if len(state.get("extra_changes", [])) >= MAX_EXTRA_CHANGES:
                    raise AggregationError(
                        f"the close asked for more than {MAX_EXTRA_CHANGES} changes beyond the rule's aggregate"
                    )
                state["pending"] = decision.pending
            else:
                state["weights"] = decision.weights
            pieces = state.get("pieces") or [[] for _ in state["ranges"]]
            flags = {"weights": decision.weights, "responses": state["job"]["examples"] is not None}
            return _pass(COMBINE, state, [flags | {"pieces": p} for p in pieces])
        assert decision.result is not None
        if decision.result.status != CloseStatus.aggregated:
            discard(blobs, state)
            return decision.result
        result = _assemble(inputs, blobs, state, decision)
    except BaseException:
        discard(blobs, state)
        raise
    discard(blobs, state)
    return result


def _pass(name: str, state: dict[str, Any], extras: Sequence[Mapping[str, Any]]) -> Pass:
    """The pass ``name`` over the state's ranges, each shard's job the close's with its range and ``extras``."""
    state["sent_at"] = time.time()
    payloads = [
        {**state["job"], "start": a, "stop": b, **extra}
        for (a, b), extra in zip(state["ranges"], extras, strict=True)
    ]
    return Pass(name, payloads, {**state, "stage": name})


def _assemble(inputs: Inputs, blobs: BlobStore, state: Mapping[str, Any], decision: _Decision) -> RoundResult:
    """The round's result in the real coordinates: the new model is the base plus the decision's multiples
    of the aggregate the shards wrote and of the reference (as the single close keeps ``step x aggregate``,
    or the server's own step), in float32 as it computes them."""
    result = decision.result
    assert result is not None and result.record is not None
    base = np.frombuffer(get_temporary(blobs, state["base"]), dtype="<f4")
    aggregate = np.concatenate(
        [np.frombuffer(get_temporary(blobs, digest), dtype="<f4") for digest in state["aggregate"]]
    )
    vector = base.copy()
    on_aggregate, on_reference, *on_extra = decision.kept
    if on_aggregate != 0.0:
        vector += np.float32(on_aggregate) * aggregate
    if on_reference != 0.0:
        reference = np.frombuffer(get_temporary(blobs, state["job"]["extra"][0]), dtype="<f4")
        vector += np.float32(on_reference) * reference
    for on_change, extra in zip(on_extra, state.get("extra_changes", []), strict=True):
        if on_change != 0.0:
            change = np.concatenate(
                [np.frombuffer(get_temporary(blobs, digest), dtype="<f4") for digest in extra["parts"]]
            )
            vector += np.float32(on_change) * change
    record = replace(
        result.record,
        dp_noise_std=decision.noise_std,
        epsilon_spent=decision.epsilon_spent,
        params={**result.record.params, "shards": len(state["ranges"])},
        durations_ms={
            **result.record.durations_ms,
            **state["durations_ms"],
            "shard_read_ms_max": state["read_ms_max"],
        },
    )
    return replace(
        result, new_weights=unflatten(vector, inputs.spec), aggregate=aggregate.copy(), record=record
    )


def _sum(blobs: BlobStore, state: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The shards' partial statistics (a temporary blob each), summed in the shards' order one at a time,
    then deleted (named in the state's temporaries until then)."""
    digests = [r["statistics"] for r in results]
    state["temporary"] += digests
    total: dict[str, np.ndarray] = {}
    for digest in digests:
        for key, value in _kept(blobs, digest).items():
            # In place: each load is a fresh array, and the sum holds one copy (an MLP's responses are large).
            total[key] = value if key not in total else np.add(total[key], value, out=total[key])
    for digest in set(digests):  # after the sum: two shards with equal statistics share one blob
        blobs.delete(digest)
    return total


def _store(blobs: BlobStore, job: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> str:
    """Arrays as one temporary blob of the job's round (npz): a shard's partial statistics travel through the
    blob store, not the result backend (24 MB a shard at n = 1,000)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return put_temporary(blobs, int(job["round_id"]), buffer.getvalue())


def _keep(blobs: BlobStore, state: dict[str, Any], arrays: Mapping[str, np.ndarray]) -> str:
    """Summed statistics as a temporary blob (the state that travels between passes names it)."""
    digest = _store(blobs, state["job"], arrays)
    state["temporary"].append(digest)
    return digest


def _kept(blobs: BlobStore, digest: str) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(get_temporary(blobs, digest))) as data:
        return {key: data[key] for key in data.files}


@dataclass(frozen=True)
class _Decision:
    """What the coordinator decided from the passes so far: the derived rows the second pass computes, or
    the combine's weights over Y's rows and then the derived rows (the rule's aggregate), or the round's
    result with the new model's multiples of the aggregate and of the reference (``kept``)."""

    derivations: list[Derivation] = field(default_factory=list)
    weights: list[float] | None = None
    # With ``weights``, after the rule's aggregate: the change of E's space those weights make, which the
    # decision needs on every validation example or in the real coordinates (a stalled round's second
    # candidate, the wider-clip candidate); the combine pass then computes it as one more known change.
    pending: list[float] | None = None
    result: RoundResult | None = None
    # Multiples of the aggregate, of the reference and of each extra change, in that order.
    kept: tuple[float, ...] = (0.0, 0.0)
    noise_std: float | None = None
    epsilon_spent: float | None = None


def _decide(
    inputs: Inputs,
    blobs: BlobStore,
    holdout: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator,
    now: datetime,
    state: Mapping[str, Any],
) -> _Decision:
    """The rule, then compute_round, in E's space (see aggregator.round.sharding), from the statistics the
    state names; a result when the round ends here (failed, extended, or its budget refuses it)."""
    params = round_params(inputs)
    sums = _kept(blobs, state["statistics"])
    total = ShardStatistics(sums["gram"], sums["scores"], sums["heads"])
    failed = {int(k): v for k, v in state["failed"].items()}
    height = len(inputs.updates) + len(state["job"]["extra"])
    clients, rejected, keep = _clients(inputs, failed)
    rows = keep + list(range(len(inputs.updates), height))
    if rows == list(range(height)):
        statistics = total  # no update failed: no copy of the responses
    else:
        statistics = ShardStatistics(total.gram[np.ix_(rows, rows)], total.scores[rows], total.heads[rows])
    embedding = Embedding.of(statistics.gram)
    round_inputs = inputs.round_inputs(
        params,
        clients=clients,
        deltas=np.zeros((len(clients), 0), dtype=np.float32),
        rejected=rejected,
        holdout=None,
    )
    dp = _privacy(round_inputs, statistics.gram, rng)
    if isinstance(dp, str):
        return _Decision(
            result=RoundResult(CloseStatus.failed, dp, rejected=tuple((c.update_id, r) for c, r in rejected))
        )
    rule, plan = _plan(round_inputs, embedding, rows, rng, dp)
    derivations = list(plan.derivations)
    if dp is not None:
        derivations.append({"rule": "noise", "seed": dp.seed, "std": dp.std})
    if derivations and "derived" not in state:
        return _Decision(derivations=derivations)
    if derivations:
        d = _kept(blobs, state["derived"])
        derived = DerivedStatistics(d["cross"], d["gram"], d["scores"], d["heads"])
        statistics = augment(total, derived, rows)
        embedding = Embedding.of(statistics.gram)
    embedded = embedded_inputs(round_inputs, embedding, True, state["has_change"], None)
    if dp is not None:
        # Clipped here (the factors from the norms); compute_round then runs without DP, the noise being
        # the last derived row, which the rule adds.
        clipped = embedded.deltas * dp.scale[:, None]
        embedded = replace(embedded, deltas=clipped, params=replace(params, dp=None))
    if rule is not None:
        row = embedding.rows[len(rows)] if plan.derivations else None
        noise = embedding.rows[len(rows) + len(derivations) - 1] if dp is not None else None
        embedded = replace(embedded, strategy=ShardedRule(rule, plan, row, noise))
    n = len(clients)
    if "aggregate" not in state:
        vector = rule_aggregate(embedded, rng)
        if vector is not None:
            # The combine pass writes this aggregate in the real coordinates (weights over Y's rows, then
            # the derived rows): what the decision evaluates and the new model is made of.
            return _Decision(weights=_combine_weights(embedding, vector, rows, height, len(derivations)))
        # The rule refuses the round (too few clients, its own conditions): compute_round fails or extends
        # it with the reason before it scores anything.
        result = compute_round(embedded, rng, now)
        if result.status == CloseStatus.aggregated:
            raise AggregationError("the rule refused the round in E's space but compute_round aggregated it")
        return _Decision(result=result)
    _, (features, labels) = server_data(holdout)
    examples = state["job"]["examples"]
    # Changes beyond the rule's aggregate that a further combine pass computed (a stalled round's second
    # candidate, the wider-clip candidate): E's vectors, their real coordinates in the shards' blobs.
    extras = [np.asarray(extra["change"], dtype=np.float64) for extra in state.get("extra_changes", [])]
    known, known_responses = np.zeros((0, embedding.dimension)), np.zeros((0, 0, 0))
    if examples is not None:
        sent = np.asarray(state["weights"], dtype=np.float64)
        aggregate = embedding.rows.T @ np.concatenate([sent[rows], sent[height:]])
        # On every validation example only the aggregate and the reference are known (the combine pass's),
        # and each extra change (its pass's first row; the second is the reference again).
        known = np.stack([aggregate, embedding.rows[n], *extras])
        known_responses = np.concatenate(
            [_kept(blobs, state["known"])["scores"]]
            + [_kept(blobs, extra["known"])["scores"][:1] for extra in state.get("extra_changes", [])]
        )
    # The base model on the validation examples, its deltas E's changes: compute_round's batched scores and
    # its ``evaluate`` both combine the rows' summed responses and heads.
    batch = EmbeddedBatch(
        inputs.weights,
        features,
        labels,
        inputs.spec,
        statistics.scores,
        statistics.heads,
        embedding.to_weights,
        None if examples is None else np.asarray(examples, dtype=np.int64),
        known,
        known_responses,
    )
    evaluate = embedded_evaluation(embedding, batch, statistics.scores, statistics.heads)
    try:
        result = compute_round(replace(embedded, evaluate=evaluate, validation=batch), rng, now)
    except OutsideSpan as exc:
        # Above the score budget the decision evaluated a change the shards know on the scores' examples
        # only (a second or wider-clip candidate): one more combine pass computes it on every example
        # (and writes its coordinates), and compute_round runs again, as it ran here, with it known.
        return _extra_change(embedding, exc.change, rows, height, len(derivations))
    if result.status != CloseStatus.aggregated:
        return _Decision(result=result)
    assert result.new_weights is not None and result.aggregate is not None and embedded.reference is not None
    # The model compute_round kept, in E's space (its base is zero): a multiple of the aggregate, of the
    # reference when the decision keeps the server's own step, or of an extra change (another candidate).
    try:
        kept = span_coefficients(
            result.new_weights["embedded"], np.stack([result.aggregate, embedded.reference, *extras])
        )
    except OutsideSpan as exc:
        # Below the score budget the decision could evaluate any combination of the rows, and kept one the
        # shards have not written (a second or wider-clip candidate): one more combine pass writes it.
        return _extra_change(embedding, exc.change, rows, height, len(derivations))
    return _Decision(
        result=result,
        kept=tuple(float(c) for c in kept),
        noise_std=None if dp is None else dp.std,
        epsilon_spent=None if dp is None else dp.accountant.epsilon_spent,
    )


def _combine_weights(
    embedding: Embedding, change: np.ndarray, rows: Sequence[int], height: int, derivations: int
) -> list[float]:
    """A change of E's space as the combine pass's weights: over Y's rows (zero for a rejected update's),
    then over the derived rows."""
    w = row_weights(embedding, change)
    weights = np.zeros(height + derivations)
    weights[list(rows)] = w[: len(rows)]
    weights[height:] = w[len(rows) :]
    return [float(x) for x in weights]


def _extra_change(
    embedding: Embedding, change: np.ndarray, rows: Sequence[int], height: int, derivations: int
) -> _Decision:
    """The combine pass that computes ``change`` (E's space) beyond the rule's aggregate."""
    weights = _combine_weights(embedding, change, rows, height, derivations)
    return _Decision(weights=weights, pending=[float(x) for x in change])


def rule_aggregate(inputs: RoundInputs, rng: np.random.Generator) -> np.ndarray | None:
    """The aggregate compute_round's rule will return on ``inputs`` (E's rows, clipped under DP, the rule
    :class:`ShardedRule`) given the round's generator ``rng`` (copied, not drawn from): the same clients,
    claims and call as compute_round's. None: the rule will not run or refuses (compute_round then fails or
    extends the round)."""
    params, strategy = inputs.params, inputs.strategy
    if strategy is None:
        return None
    n = len(inputs.clients)
    reputation = np.array([c.reputation for c in inputs.clients], dtype=np.float64)
    eligible = reputation >= params.min_reputation
    if int(eligible.sum()) < max(params.min_participants, strategy.required_clients()):
        return None
    X = np.asarray(inputs.deltas, dtype=np.float32).reshape(n, -1)
    samples = SampleWeights.of(
        np.array([c.num_samples for c in inputs.clients], dtype=np.float64), params.sample_weight_cap
    )
    members = np.flatnonzero(eligible)
    try:
        result = strategy.aggregate(
            X if members.size == n else X[members],
            strategies.StrategyInputs(
                samples.capped[members],
                reputation[members],
                reference=inputs.reference,
                rng=copy.deepcopy(rng).spawn(1)[0],
            ),
        )
    except AggregationError:
        return None
    vector: np.ndarray = result.vector
    return vector


@dataclass(frozen=True)
class _Privacy:
    """DP of a sharded close: each client's clip factor, the noise's std and seed, the accountant after it."""

    scale: np.ndarray  # (n,) float32
    std: float
    seed: int
    accountant: PrivacyAccountant


def _members(inputs: RoundInputs) -> tuple[strategies.Strategy | None, np.ndarray, bool]:
    """The round's rule (None: the parameters name no valid one), its eligible clients, and whether they
    are enough for compute_round to run the rule (else it extends or fails the round before, as here)."""
    params = inputs.params
    try:
        rule = strategies.build(params)
    except AggregationError:
        return None, np.zeros(0, dtype=np.int64), False
    reputation = np.array([c.reputation for c in inputs.clients], dtype=np.float64)
    members = np.flatnonzero(reputation >= params.min_reputation)
    return rule, members, members.size >= max(params.min_participants, rule.required_clients())


def _privacy(inputs: RoundInputs, gram: np.ndarray, rng: np.random.Generator) -> _Privacy | str | None:
    """The round's DP, as compute_round would apply it to the same clients (None: no DP, or a round that
    does not get as far; a string: the budget refuses the round)."""
    dp = inputs.params.dp
    rule, members, enough = _members(inputs)
    if dp is None or rule is None or not enough:
        return None
    try:
        accountant = PrivacyAccountant(
            dp.noise_multiplier, 1.0, dp.delta, dp.epsilon_budget, inputs.dp_rounds_spent
        ).charge()
    except PrivacyBudgetExceeded as exc:
        return str(exc)
    # dp.clip_rows's factors, from the norms the Gram matrix holds.
    n = len(inputs.clients)
    norms = np.sqrt(np.maximum(np.diag(gram)[:n], 0.0))
    scale = np.minimum(1.0, dp.clip_norm / np.maximum(norms, 1e-30)).astype(np.float32)
    std = gaussian_noise_std(dp.clip_norm, dp.noise_multiplier, members.size)
    return _Privacy(scale, std, noise_seed(rng), accountant)


def _plan(
    inputs: RoundInputs,
    embedding: Embedding,
    rows: Sequence[int],
    rng: np.random.Generator,
    dp: _Privacy | None,
) -> tuple[strategies.Strategy | None, Plan]:
    """The round's rule and what its second pass derives, from the first pass's E (as compute_round will
    pick the eligible clients). None: the parameters name no valid rule (compute_round fails the round)."""
    params = inputs.params
    rule, members, enough = _members(inputs)
    if rule is None or not enough:
        return rule, Plan()  # compute_round extends or fails the round before the rule runs
    samples = SampleWeights.of(
        np.array([c.num_samples for c in inputs.clients], dtype=np.float64), params.sample_weight_cap
    )
    reputation = np.array([c.reputation for c in inputs.clients], dtype=np.float64)
    E = embedding.rows.astype(np.float32)
    n = len(inputs.clients)
    clients = E[:n] if dp is None else E[:n] * dp.scale[:, None]
    scale = None if dp is None else dp.scale[members]
    rule_inputs = strategies.StrategyInputs(samples.capped[members], reputation[members], reference=E[n])
    return rule, plan_derivations(
        rule, clients[members], [rows[int(i)] for i in members], rule_inputs, rng, scale
    )
