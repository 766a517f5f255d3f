"""Sign-In with Ethereum (EIP-4361): the message, its parsing, its signature.

Built here rather than taken from the `siwe` package, which does not install
with current dependencies. The signature is EIP-191 `personal_sign`; the
signer is recovered with eth-account and must be the message's address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from livesessions.digits import parse_decimal

_HEADER = re.compile(
    r"^(?:(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://)?(?P<domain>[^\s/]+) wants you to sign in with your Ethereum account:$"
)
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_NONCE = re.compile(r"^[a-zA-Z0-9]{8,}$")
_SIGNATURE = re.compile(r"^0x[0-9a-fA-F]{130}$")
_FIELDS = {
    "URI": "uri",
    "Version": "version",
    "Chain ID": "chain_id",
    "Nonce": "nonce",
    "Issued At": "issued_at",
    "Expiration Time": "expiration_time",
    "Not Before": "not_before",
    "Request ID": "request_id",
}


class SiweError(ValueError):
    """The message or signature is malformed."""


@dataclass(frozen=True)
class SiweMessage:
    domain: str
    address: str
    uri: str
    chain_id: int
    nonce: str
    issued_at: str
    version: str = "1"
    statement: str | None = None
    scheme: str | None = None
    expiration_time: str | None = None
    not_before: str | None = None
    request_id: str | None = None
    resources: tuple[str, ...] = field(default=())

    def text(self) -> str:
        """The exact text a wallet signs."""
        prefix = f"{self.scheme}://{self.domain}" if self.scheme else self.domain
        lines = [f"{prefix} wants you to sign in with your Ethereum account:", self.address, ""]
        if self.statement is not None:
            lines.append(self.statement)
        lines += [
            "",
            f"URI: {self.uri}",
            f"Version: {self.version}",
            f"Chain ID: {self.chain_id}",
            f"Nonce: {self.nonce}",
            f"Issued At: {self.issued_at}",
        ]
        for label, value in (
            ("Expiration Time", self.expiration_time),
            ("Not Before", self.not_before),
            ("Request ID", self.request_id),
        ):
            if value is not None:
                lines.append(f"{label}: {value}")
        if self.resources:
            lines.append("Resources:")
            lines += [f"- {resource}" for resource in self.resources]
        return "\n".join(lines)


def parse_message(text: str) -> SiweMessage:
    lines = text.split("\n")
    if len(lines) < 7:
        raise SiweError("not an EIP-4361 message: too short")
    header = _HEADER.match(lines[0])
    if header is None:
        raise SiweError(
            "not an EIP-4361 message: the first line must be "
            "'<domain> wants you to sign in with your Ethereum account:'"
        )
    address = lines[1]
    if not _ADDRESS.match(address):
        raise SiweError("the second line must be an Ethereum address (0x and 40 hex digits)")
    from eth_utils.address import is_checksum_address  # see recover_signer

    if not is_checksum_address(address):
        raise SiweError("the address must be in its EIP-55 checksum form")
    if lines[2] != "":
        raise SiweError("an empty line must follow the address")
    index = 3
    statement = None
    # An optional statement, then an empty line (some writers leave out the
    # second empty line when there is no statement; both are accepted).
    if lines[index] == "":
        index += 1
    elif not lines[index].startswith("URI: "):
        statement = lines[index]
        if "\n" in statement or index + 1 >= len(lines) or lines[index + 1] != "":
            raise SiweError("the statement must be one line followed by an empty line")
        index += 2
    values: dict[str, str] = {}
    resources: list[str] = []
    for line in lines[index:]:
        if line == "Resources:":
            values["resources"] = ""
            continue
        if "resources" in values:
            if not line.startswith("- "):
                raise SiweError(f"malformed resource line: {line[:60]!r}")
            resources.append(line[2:])
            continue
        label, sep, value = line.partition(": ")
        key = _FIELDS.get(label)
        if not sep or key is None:
            raise SiweError(f"unexpected line: {line[:60]!r}")
        if key in values:
            raise SiweError(f"{label} appears twice")
        values[key] = value
    for required in ("uri", "version", "chain_id", "nonce", "issued_at"):
        if required not in values:
            raise SiweError(f"missing field: {next(k for k, v in _FIELDS.items() if v == required)}")
    chain_id = parse_decimal(values.pop("chain_id"))
    if chain_id is None:
        raise SiweError("Chain ID must be a number in ASCII digits")
    if not _NONCE.match(values["nonce"]):
        raise SiweError("Nonce must be at least 8 letters or digits")
    for key in ("issued_at", "expiration_time", "not_before"):
        if key in values:
            parse_time(values[key])
    values.pop("resources", None)
    return SiweMessage(
        domain=header.group("domain"),
        scheme=header.group("scheme"),
        address=address,
        statement=statement,
        chain_id=chain_id,
        resources=tuple(resources),
        **values,
    )


def parse_time(value: str) -> int:
    """An RFC 3339 date-time, as epoch milliseconds."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SiweError(f"not an RFC 3339 date-time: {value[:40]!r}") from None
    if moment.tzinfo is None:
        raise SiweError(f"date-time needs a time zone: {value[:40]!r}")
    return int(moment.timestamp() * 1000)


def format_time(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def preload() -> None:
    """Import the signature code ahead of the first sign-in (run it off the
    event loop: the import takes most of a second)."""
    import eth_account.messages  # noqa: F401
    import eth_utils.address  # noqa: F401


def recover_signer(text: str, signature: str) -> str:
    """The checksummed address that signed `text` with personal_sign."""
    # eth-account takes most of a second to import: commands do not pay it,
    # and the service imports it off the event loop at start (see preload).
    from eth_account import Account
    from eth_account.messages import encode_defunct

    if not _SIGNATURE.match(signature):
        raise SiweError("the signature must be 0x and 130 hex digits (65 bytes)")
    try:
        signer: str = Account.recover_message(encode_defunct(text=text), signature=signature)
        return signer
    except Exception as exc:  # noqa: BLE001 - any failure to recover is a bad signature
        raise SiweError(f"the signature cannot be recovered: {exc}") from None


def checksum(address: str) -> str:
    from eth_utils.address import to_checksum_address

    return to_checksum_address(address)
