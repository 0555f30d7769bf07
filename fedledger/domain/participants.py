"""Participants: the organizations registered with the platform, one row per wallet.

Whether a wallet may register at all (enrolled on-chain with stake) is the chain's to say; the caller reads
it and calls :func:`register` only for an enrolled, active wallet.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Participant, ParticipantStatus
from fedledger.domain import audit
from fedledger.domain.errors import Conflict, NotFound


def find(session: Session, address: str) -> Participant | None:
    """The participant registered under ``address`` (checksummed), if any."""
    return session.scalars(select(Participant).where(Participant.address == address)).first()


def require(session: Session, address: str) -> Participant:
    """The participant registered under ``address``; :class:`NotFound` before it registers."""
    participant = find(session, address)
    if participant is None:
        raise NotFound(
            "not_registered", "register the organization first (`fedledger client enroll` registers it)"
        )
    return participant


def register(session: Session, address: str, org_name: str, encryption_key_id: str | None) -> Participant:
    """Register ``address``'s organization, or change its name or key (idempotent), in the audit log.

    Only an active participant may change its registration: a suspended, slashed or exited one keeps the
    registration it was judged under (:class:`Conflict`).
    """
    details = {"org_name": org_name, "encryption_key_id": encryption_key_id}
    participant = find(session, address)
    if participant is None:
        participant = Participant(address=address, org_name=org_name, encryption_key_id=encryption_key_id)
        session.add(participant)
        session.flush()
        audit.append(session, address, "participant.register", address, details)
    elif (participant.org_name, participant.encryption_key_id) != (org_name, encryption_key_id):
        if participant.status != ParticipantStatus.active:
            raise Conflict(
                f"participant_{participant.status.value}",
                "a suspended, slashed or exited participant cannot change its registration",
            )
        participant.org_name, participant.encryption_key_id = org_name, encryption_key_id
        audit.append(session, address, "participant.update", address, details)
    return participant


def listing(session: Session) -> list[Participant]:
    """Every participant, in registration order."""
    return list(session.scalars(select(Participant).order_by(Participant.id)))
