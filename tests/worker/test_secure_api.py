"""The secure-aggregation routes on the live stack (API, Hardhat, PostgreSQL): phases, groups drawn from
a block hash, every message checked through the group's transcript, idempotent writes, 4xx with reasons."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import sqlalchemy as sa

from db.models import SecAggMessage, SecAggRound, Update
from fedledger.config import Settings
from fedledger.crypto.chunked import signed_payload_hash
from fedledger.crypto.eip712 import sign_update
from fedledger.crypto.envelope import seal
from fedledger.devkeys import dev_private_key
from fedledger.payload import encode_update
from fedledger.secagg import wire
from fedledger.secagg.groups import group_seed
from fedledger.secagg.messages import Domain, sign
from fedledger.secagg.protocol import GroupMember
from tests.worker.conftest import ORGS, Platform, address_of
from tests.worker.secure_kit import Members, context_of, govern, mine, small_update

pytestmark = [pytest.mark.chain, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Small updates only (the model has 650 coordinates), so a message's size bound is cheap to cross.
    return settings.model_copy(update={"max_update_bytes": 8192})


def test_an_oversized_message_is_refused_before_it_is_read_whole(platform: Platform) -> None:
    api = Members(platform, 1, ORGS[:1])
    body = {"member": address_of(ORGS[0]), "padding": "0" * 300_000}
    response = api.post(ORGS[0], "keys", body)
    assert response.status_code == 413 and response.json()["error"] == "too_large", response.text
    garbage = platform.client.post(
        "/v1/rounds/1/secagg/keys", content=b"\xff\xfe not json", headers=api.headers[ORGS[0]]
    )
    assert garbage.status_code == 400 and garbage.json()["error"] == "invalid_json", garbage.text
    # The public groups report: 404 for no such round, 409 with the reason for a round in the clear mode.
    unknown = platform.client.get("/v1/rounds/1/secagg/groups")
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_round", unknown.text
    clear = platform.open_round(duration=600, quorum=3)
    response = platform.client.get(f"/v1/rounds/{clear['id']}/secagg/groups")
    assert response.status_code == 409 and response.json()["error"] == "clear_round", response.text
    assert "clear mode" in response.json()["detail"]


def test_group_sizes_one_and_two_are_refused_at_the_opening(platform: Platform) -> None:
    govern(platform, "secure_group_size", 2)
    response = platform.client.post("/v1/rounds", json={"duration_seconds": 60}, headers=platform.operator)
    assert response.status_code == 409 and response.json()["error"] == "invalid_secure_group_size", (
        response.text
    )


def test_a_secure_round_runs_its_four_steps_through_the_api(platform: Platform) -> None:
    govern(platform, "secure_group_size", 3)
    trio, outsider = ORGS[:3], ORGS[3]
    round_ = platform.open_round(duration=600, quorum=3, cohort=trio)
    rid = round_["id"]
    api = Members(platform, rid, (*trio, outsider))
    view = api.view(trio[0])
    assert (view["mode"], view["phase"], view["group_size"], view["joined"]) == ("secure", "join", 3, False)
    domain = Domain(view["chain_id"], view["verifying_contract"])
    join = {"roundId": rid, "modelVersion": round_["model_version"]}

    # A clear submission is refused: the server must never hold an update of this round.
    # (A well-formed update, sealed to the server's key and signed, so only the mode check stands before it.)
    weights = platform.global_weights()
    delta = {k: np.zeros_like(v) for k, v in weights.items()}
    key = platform.client.get("/v1/keys/current").json()
    fields = {
        "round_id": rid,
        "model_version": round_["model_version"],
        "participant": address_of(trio[0]),
        "num_samples": 10,
    }
    envelope = seal(encode_update(delta), key["public_key_pem"].encode(), **fields)
    signature = sign_update(
        dev_private_key(trio[0]),
        chain_id=platform.deployments.chain_id,
        verifying_contract=platform.deployments.addresses["ContributionLedger"],
        round_id=rid,
        model_version=round_["model_version"],
        payload_hash=signed_payload_hash(envelope),
        num_samples=10,
    )
    clear = platform.client.post(
        f"/v1/rounds/{rid}/updates",
        content=envelope,
        headers={**api.headers[trio[0]], "X-Update-Signature": signature},
    )
    assert clear.status_code == 409 and clear.json()["error"] == "secure_round", clear.text

    forged = api.post(
        trio[0], "join", {"signature": sign(dev_private_key(trio[1]), domain, "SecAggJoin", join)}
    )
    assert forged.status_code == 422 and "signed by" in forged.text
    outside = api.post(
        outsider, "join", {"signature": sign(dev_private_key(outsider), domain, "SecAggJoin", join)}
    )
    assert outside.status_code == 403 and outside.json()["error"] == "not_in_cohort"
    for index in trio:
        body = {"signature": sign(dev_private_key(index), domain, "SecAggJoin", join)}
        assert api.post(index, "join", body).json()["replayed"] is False
    again = api.post(
        trio[0], "join", {"signature": sign(dev_private_key(trio[0]), domain, "SecAggJoin", join)}
    )
    assert again.status_code == 200 and again.json()["replayed"] is True

    # Every cohort member joined: the next block's hash will seed the groups; until it is mined, no group.
    view = api.view(trio[0])
    assert view["phase"] == "join" and view["seed_block"] is not None and view["group"] is None
    mine(platform)
    view = api.view(trio[0])
    block = platform.w3.eth.get_block(view["seed_block"])
    assert view["phase"] == "keys" and view["seed_block_hash"] == "0x" + bytes(block["hash"]).hex()
    assert view["seed"] == "0x" + group_seed(bytes(block["hash"]), rid).hex()
    assert sorted(a.lower() for a in view["group"]["members"]) == sorted(address_of(i).lower() for i in trio)
    context = context_of(view)
    members = {i: GroupMember(context, address=address_of(i), wallet_key=dev_private_key(i)) for i in trio}
    # Everyone (no sign-in) sees the group drawn, its size and threshold, but not who is in it while the
    # protocol runs: an outsider learns no one to keep offline to fail it.
    public = platform.client.get(f"/v1/rounds/{rid}/secagg/groups")
    assert public.status_code == 200, public.text
    report = public.json()
    assert (report["phase"], report["round_status"], report["seed"]) == ("keys", "OPEN", view["seed"])
    assert [(g["size"], g["threshold"], g["status"], g["members"]) for g in report["groups"]] == [
        (3, 2, "pending", None)
    ]

    # Step 1, with the refusals: wrong phase, a stranger, a forged advert, a different second advert.
    early = api.post(trio[0], "shares", {"dealer": address_of(trio[0])})
    assert early.status_code == 409 and early.json()["error"] == "wrong_phase"
    stranger = GroupMember(
        context, address=address_of(trio[1]), wallet_key=dev_private_key(trio[0])
    ).advertise()
    stray = api.post(outsider, "keys", {**wire.advert_json(stranger), "member": address_of(outsider)})
    assert stray.status_code == 403 and stray.json()["error"] == "not_a_member"
    bad = api.post(trio[1], "keys", wire.advert_json(stranger))
    assert bad.status_code == 422 and "signed by" in bad.text
    adverts = {i: wire.advert_json(m.advertise()) for i, m in members.items()}
    assert api.post(trio[0], "keys", adverts[trio[0]]).json()["replayed"] is False
    assert api.post(trio[0], "keys", adverts[trio[0]]).json()["replayed"] is True
    other = GroupMember(context, address=address_of(trio[0]), wallet_key=dev_private_key(trio[0])).advertise()
    differs = api.post(trio[0], "keys", wire.advert_json(other))
    assert differs.status_code == 409 and differs.json()["error"] == "message_differs"
    for i in trio[1:]:
        assert api.post(i, "keys", adverts[i]).status_code == 200
    # Step 2: every member advertised, so the phase ended at once.
    view = api.view(trio[0])
    assert view["phase"] == "shares" and len(view["adverts"]) == 3
    for i, m in members.items():
        bundle = m.deal([wire.advert_from(a) for a in api.view(i)["adverts"]])
        assert api.post(i, "shares", wire.bundle_json(bundle)).status_code == 200
    # Step 3: the vector is checked against the model's dimension and the signed hash.
    updates = {i: small_update(view["dimension"], i) for i in trio}
    for i, m in members.items():
        bundles = [wire.bundle_from(b) for b in api.view(i)["bundles"]]
        masked = m.mask(updates[i], 100 + i, bundles)
        assert masked.vector is not None
        body = {
            "masked": wire.masked_json(masked),
            "vector": base64.b64encode(wire.vector_bytes(masked.vector)).decode(),
        }
        if i == trio[0]:
            short = {**body, "vector": base64.b64encode(wire.vector_bytes(masked.vector[:-1])).decode()}
            refused = api.post(i, "masked", short)
            assert refused.status_code == 422 and "words" in refused.text
        accepted = api.post(i, "masked", body)
        assert accepted.status_code == 200 and accepted.json()["receipt_id"], accepted.text
    # Step 4: each member is shown the survivors' signed headers and reveals; the protocol is then over.
    for i, m in members.items():
        headers = [wire.masked_from(h) for h in api.view(i)["masked"]]
        assert len(headers) == 3
        assert api.post(i, "unmask", wire.reveal_json(m.unmask(headers))).status_code == 200
    assert api.view(trio[0])["phase"] == "closed"
    # The protocol is over but the round is not closed (no worker here): still no members, no outcome.
    pending = platform.client.get(f"/v1/rounds/{rid}/secagg/groups").json()["groups"][0]
    assert (pending["status"], pending["members"], pending["survivors"], pending["kept"]) == (
        "pending",
        None,
        None,
        None,
    )

    engine = sa.create_engine(platform.settings.database_url)
    with engine.connect() as conn:
        steps = conn.execute(
            sa.select(SecAggMessage.step, sa.func.count())
            .where(SecAggMessage.round_id == rid)
            .group_by(SecAggMessage.step)
        ).all()
        assert {str(s): n for s, n in steps} == {"keys": 3, "shares": 3, "masked": 3, "unmask": 3}
        rows = conn.execute(sa.select(Update.key_id, Update.num_samples).where(Update.round_id == rid)).all()
        assert sorted(r.num_samples for r in rows) == [100 + i for i in trio] and {
            r.key_id for r in rows
        } == {None}
        assert (
            conn.execute(sa.select(SecAggRound.phase).where(SecAggRound.round_id == rid)).scalar_one()
            == "closed"
        )
    engine.dispose()


def test_an_operator_close_ends_the_current_phase_and_a_round_short_of_a_group_fails(
    platform: Platform,
    worker,  # type: ignore[no-untyped-def]
) -> None:
    govern(platform, "secure_group_size", 3)
    trio = ORGS[:3]
    round_ = platform.open_round(duration=600, quorum=3, cohort=trio)
    rid = round_["id"]
    api = Members(platform, rid, trio[:2])
    view = api.view(trio[0])
    domain = Domain(view["chain_id"], view["verifying_contract"])
    join = {"roundId": rid, "modelVersion": round_["model_version"]}
    for index in trio[:2]:
        assert (
            api.post(
                index, "join", {"signature": sign(dev_private_key(index), domain, "SecAggJoin", join)}
            ).status_code
            == 200
        )
    # The join phase waits for the third cohort member (300 s by default) until the operator closes.
    assert api.view(trio[0])["phase"] == "join"
    closed = platform.client.post(f"/v1/rounds/{rid}/close", headers=platform.operator)
    assert closed.status_code == 200, closed.text
    view = api.view(trio[0])
    assert view["phase"] == "closed" and "fewer than one group of 3" in view["failure_reason"]
    final = platform.wait_for(rid, {"FAILED", "POSTED"}, timeout=120)
    assert final["status"] == "FAILED" and "fewer than one group of 3" in final["failure_reason"], final
