"""Issue 21.12: a Flower client cannot name another wallet in its reply. Each platform-mode reply carries an
EIP-191 signature, by the wallet it names, of its round, its Flower node id and its receipt; the strategy
refuses a reply whose signature is missing or another wallet's (it used to believe the named wallet, so a node
was counted, scored and reported as another organization)."""

from __future__ import annotations

from eth_account import Account
from eth_account.messages import encode_defunct

from fedledger.devkeys import dev_private_key
from fedledger.flower import reply_signer_matches, reply_statement

VICTIM, ATTACKER = Account.from_key(dev_private_key(3)), Account.from_key(dev_private_key(4))


def sign(account, round_id: int, node_id: int, address: str, receipt: str) -> str:  # type: ignore[no-untyped-def]
    message = encode_defunct(text=reply_statement(round_id, node_id, address, receipt))
    return str(Account.sign_message(message, account.key).signature.to_0x_hex())


def test_a_reply_naming_another_wallet_is_refused() -> None:
    # The attacker's node names the victim's wallet: unsigned, or signed with its own key.
    assert "no signature" in str(reply_signer_matches(5, 9, VICTIM.address, "r1", None))
    forged = sign(ATTACKER, 5, 9, VICTIM.address, "r1")
    assert "signed by " + ATTACKER.address in str(reply_signer_matches(5, 9, VICTIM.address, "r1", forged))
    assert "malformed" in str(reply_signer_matches(5, 9, VICTIM.address, "r1", "0x1234"))
    # The victim's own signature, replayed for another node, round or receipt, is not the victim's for it.
    genuine = sign(VICTIM, 5, 9, VICTIM.address, "r1")
    assert reply_signer_matches(5, 9, VICTIM.address, "r1", genuine) is None
    assert reply_signer_matches(5, 10, VICTIM.address, "r1", genuine) is not None
    assert reply_signer_matches(6, 9, VICTIM.address, "r1", genuine) is not None
    assert reply_signer_matches(5, 9, VICTIM.address, "r2", genuine) is not None
