"""The EIP-4361 message: built, parsed, and checked against eth-account signatures."""

from __future__ import annotations

import pytest
from eth_account import Account
from hypothesis import given
from hypothesis import strategies as st

from livesessions.auth.siwe import SiweError, SiweMessage, format_time, parse_message, parse_time, recover_signer
from support import sign


def _message(**overrides: object) -> SiweMessage:
    fields = {
        "domain": "127.0.0.1:8080",
        "address": Account.create().address,
        "uri": "http://127.0.0.1:8080",
        "chain_id": 1,
        "nonce": "abcdefgh1234",
        "issued_at": "2026-11-29T05:00:00.000Z",
    }
    fields.update(overrides)
    return SiweMessage(**fields)  # type: ignore[arg-type]


def test_the_text_follows_the_eip_4361_layout() -> None:
    message = _message(statement="Sign in.", expiration_time="2026-11-29T06:00:00Z", resources=("https://a.example",))
    lines = message.text().split("\n")
    assert lines[0] == "127.0.0.1:8080 wants you to sign in with your Ethereum account:"
    assert lines[1] == message.address
    assert lines[2:5] == ["", "Sign in.", ""]
    assert lines[5:10] == [
        "URI: http://127.0.0.1:8080",
        "Version: 1",
        "Chain ID: 1",
        "Nonce: abcdefgh1234",
        "Issued At: 2026-11-29T05:00:00.000Z",
    ]
    assert lines[10:] == ["Expiration Time: 2026-11-29T06:00:00Z", "Resources:", "- https://a.example"]
    # without a statement, two empty lines
    assert _message().text().split("\n")[2:5] == ["", "", "URI: http://127.0.0.1:8080"]


@given(
    statement=st.none()
    | st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=40).filter(
        lambda s: not s.startswith("URI: ")
    ),
    chain_id=st.integers(1, 2**53),
    nonce=st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=8, max_size=32),
    scheme=st.sampled_from([None, "https"]),
    resources=st.lists(st.sampled_from(["https://a.example/x", "ipfs://bafy"]), max_size=3).map(tuple),
)
def test_parse_is_the_inverse_of_text(statement, chain_id, nonce, scheme, resources) -> None:
    message = _message(statement=statement, chain_id=chain_id, nonce=nonce, scheme=scheme, resources=resources)
    assert parse_message(message.text()) == message


def test_the_signer_is_recovered_from_a_personal_sign_signature() -> None:
    account = Account.create()
    text = _message(address=account.address).text()
    assert recover_signer(text, sign(text, account.key)) == account.address
    other = Account.create()
    assert recover_signer(text, sign(text, other.key)) == other.address
    assert recover_signer(text + " ", sign(text, account.key)) != account.address


@pytest.mark.parametrize("bad", ["0x1234", "deadbeef" * 16 + "00", "0x" + "zz" * 65, "0x" + "00" * 65, ""])
def test_malformed_signatures_are_refused(bad: str) -> None:
    with pytest.raises(SiweError):
        recover_signer(_message().text(), bad)


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda t: t.replace(" wants you to sign in", " would like you to sign in"), "first line"),
        (lambda t: t.replace("\n0x", "\n0X", 1), "address"),
        (lambda t: t.replace("Nonce: abcdefgh1234", "Nonce: short"), "Nonce"),
        (lambda t: t.replace("Chain ID: 1", "Chain ID: one"), "Chain ID"),
        (lambda t: t.replace("Issued At: 2026-11-29T05:00:00.000Z", "Issued At: yesterday"), "RFC 3339"),
        (lambda t: t.replace("Issued At: 2026-11-29T05:00:00.000Z", "Issued At: 2026-11-29T05:00:00"), "time zone"),
        (lambda t: t.replace("URI: http://127.0.0.1:8080\n", ""), "URI"),
        (lambda t: t + "\nNonce: again123456", "twice"),
        (lambda t: t + "\nColour: blue", "unexpected"),
        (lambda t: "\n".join(t.split("\n")[:3]), "too short"),
    ],
)
def test_malformed_messages_are_refused(mutate, reason: str) -> None:
    with pytest.raises(SiweError, match=reason):
        parse_message(mutate(_message().text()))


def test_addresses_must_be_checksummed() -> None:
    message = _message()
    with pytest.raises(SiweError, match="checksum"):
        parse_message(message.text().replace(message.address, message.address.lower()))


def test_times_round_trip() -> None:
    assert parse_time(format_time(1795929600123)) == 1795929600123
    assert parse_time("2026-11-29T05:00:00+01:00") == parse_time("2026-11-29T04:00:00Z")
