"""Turning an address into the 7-bit form SES requires.

SES accepts only ASCII addresses: a non-ASCII domain must be sent as punycode (IDNA 2008 with
UTS 46 mapping, the ``idna`` package that email-validator already brings in; the stdlib codec
implements the obsolete IDNA 2003), and a non-ASCII display name as a MIME encoded-word. A
non-ASCII local part needs SMTPUTF8, which SES does not offer, so it fails the email at once.
"""

from __future__ import annotations

import re
from email.utils import formataddr, getaddresses
from functools import lru_cache

import idna

from sesender.errors import PermanentSendError

__all__ = ["ascii_address", "has_control_characters"]

INVALID_ADDRESS = "InvalidAddress"
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
# A bare ASCII address made only of dot-separated atoms: parsing gives it back unchanged.
PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)


def has_control_characters(value: str) -> bool:
    """True when ``value`` holds an ASCII control character (NUL, CR, LF, TAB, DEL...)."""
    return CONTROL_CHARACTER.search(value) is not None


def ascii_address(address: str, *, field: str) -> str:
    """Return ``address`` with its domain punycoded and its display name encoded if needed.

    ``field`` names the address in error messages ("recipient", "sender"). Raises
    :class:`PermanentSendError` for anything that is not exactly one usable address.

    Every recipient is checked, each a new address: a plain ``local@domain`` of ASCII atoms,
    which the full parse would return unchanged, is recognised by one regex match (the parse
    was an eighth of the SES bulk path's CPU per recipient).
    """
    if PLAIN_ADDRESS.fullmatch(address):
        return address
    return parsed_ascii_address(address, field=field)


# Every email checks its sender, the same address each time: parsing it once is enough.
@lru_cache(maxsize=64)
def parsed_ascii_address(address: str, *, field: str) -> str:
    """:func:`ascii_address` by the full parse, for any address."""
    if has_control_characters(address):
        raise PermanentSendError(f"{field} contains control characters", code=INVALID_ADDRESS)
    parsed = getaddresses([address])
    if len(parsed) != 1 or not parsed[0][1]:
        raise PermanentSendError(
            f"{field} {address!r} is not exactly one address", code=INVALID_ADDRESS
        )
    display_name, bare = parsed[0]
    local, _, domain = bare.rpartition("@")
    if not local or not domain:
        raise PermanentSendError(f"{field} {bare!r} has no domain", code=INVALID_ADDRESS)
    if not local.isascii():
        raise PermanentSendError(
            f"{field} {bare!r} has a non-ASCII local part, which SES cannot send to",
            code=INVALID_ADDRESS,
        )
    if not domain.isascii():
        try:
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except UnicodeError as exc:  # idna.IDNAError and the codec errors it wraps
            raise PermanentSendError(
                f"{field} domain {domain!r} is not a valid internationalised domain: {exc}",
                code=INVALID_ADDRESS,
            ) from exc
    bare = f"{local}@{domain}"
    if display_name:
        return formataddr((display_name, bare), charset="utf-8")
    return bare
