"""Who a message may be sent from: ``ALLOWED_SENDERS``, the default sender, and a key's senders.

SES sends only from identities verified in the account: an address identity covers that
address, a domain identity every address at the domain. ``ALLOWED_SENDERS`` lists the same two
kinds (``news@example.com``, ``example.org``), so what sesender accepts in a message's ``from``
is what the operator has promised SES will take; the default sender (``AWS_SES_FROM_EMAIL``) is
always allowed. A named API key may be limited further to some of those senders.

Checking happens when a message is submitted, before anything is stored: a ``from`` outside the
list is a 400 for the whole request (nothing stored), and outside the key's senders a 403.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sesender.addresses import bare_address, check_address
from sesender.backends.addresses import parsed_ascii_address
from sesender.errors import ApiError, PermanentSendError

__all__ = ["SenderPolicy", "bare_address", "parse_sender_entry"]

#: The longest ``from`` / ``reply_to`` accepted (a header line's length).
MAX_ADDRESS_FIELD = 998


def _domain(address: str) -> str:
    return address.rpartition("@")[2]


def parse_sender_entry(entry: str) -> str | None:
    """An ``ALLOWED_SENDERS`` or key sender entry lower-cased: an address (``a@example.com``) or
    a domain (``example.com``); None when it is neither."""
    text = entry.strip().lower()
    if not text or any(c.isspace() or c in "<>,;\"'" for c in text):
        return None
    if "@" in text:
        return text if check_address(text).normalized is not None else None
    if "." not in text or text.startswith(".") or text.endswith(".") or ".." in text:
        return None
    return text


def parse_address_field(value: object, name: str) -> str:
    """A message's ``from`` or ``reply_to``: exactly one address, maybe with a display name;
    returned stripped, as given. A 400 otherwise."""
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"{name} must be a non-empty string")
    text = value.strip()
    if len(text) > MAX_ADDRESS_FIELD:
        raise ApiError(400, f"{name} must be at most {MAX_ADDRESS_FIELD} characters")
    try:
        parsed_ascii_address(text, field=name)
    except PermanentSendError as exc:
        raise ApiError(400, str(exc)) from None
    bare = bare_address(text)
    if check_address(bare).normalized is None:
        raise ApiError(400, f"{name} {bare!r} is not a valid address")
    return text


@dataclass(frozen=True, slots=True)
class SenderPolicy:
    """The default sender and ``ALLOWED_SENDERS`` (addresses and domains, lower-cased)."""

    default: str
    allowed: tuple[str, ...] = ()

    @property
    def default_address(self) -> str:
        return bare_address(self.default)

    def identities(self) -> list[str]:
        """What SES must have verified: the default sender's address, then the allowed
        addresses and domains (an identity for a domain covers every address in it)."""
        found = [self.default_address]
        found.extend(entry for entry in self.allowed if entry not in found)
        return found

    def allows(self, address: str) -> bool:
        """Whether ``address`` (bare, lower-cased) may be a message's sender."""
        if address == self.default_address:
            return True
        return address in self.allowed or _domain(address) in self.allowed

    def sender_of(self, value: object, index: int) -> str | None:
        """``messages[index].from`` checked: None for the default sender (absent, or the
        default's address itself); a 400 when it is not an allowed sender."""
        if value is None:
            return None
        text = parse_address_field(value, f"messages[{index}].from")
        address = bare_address(text)
        if not self.allows(address):
            raise ApiError(
                400,
                f"messages[{index}].from {address!r} is not an allowed sender (ALLOWED_SENDERS"
                " lists the addresses and domains this service may send from)",
            )
        return None if text == self.default else text


def key_allows(key_senders: Iterable[str] | None, address: str) -> bool:
    """Whether a key limited to ``key_senders`` (None: not limited) may send from ``address``
    (bare, lower-cased)."""
    if key_senders is None:
        return True
    senders = set(key_senders)
    return address in senders or _domain(address) in senders
