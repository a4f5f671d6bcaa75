"""SNS message verification as pure logic: parse the envelope, check its origin and signature.

Anyone on the internet can POST to the SNS webhook, so nothing in a body is believed until
:meth:`SnsVerifier.verify` has checked, in the order of the reference (ses-sns.md §1.10):

    Type -> required keys -> TopicArn allow-list -> SignatureVersion -> SigningCertURL
    -> Timestamp window -> certificate (cached fetch) -> certificate valid at the Timestamp
    -> certificate subject -> RSA PKCS#1 v1.5 signature

The cheap checks come first so a forged message costs no network fetch: a hostile
``SigningCertURL`` is refused before anything is downloaded, and a stale or foreign message is
refused before its certificate is looked up.

This module does no I/O of its own. The certificate download (``fetch_pem``, done with httpx and
no redirects elsewhere) and the clock (``now``) are injected, which is also what lets the tests
verify genuine AWS messages whose certificates expired years ago.

Failures are :class:`~sesender.errors.SnsMalformed` (not an SNS message at all: HTTP 400) or
:class:`~sesender.errors.SnsSignatureInvalid` (a well-formed message that failed a check: HTTP 403).
Messages say which check failed and never quote the signature, token or subscribe URL.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Final, Literal, NoReturn, TypeGuard, get_args
from urllib.parse import SplitResult, parse_qs, urlsplit

import trio
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from sesender.errors import SnsCertificateUnavailable, SnsMalformed, SnsSignatureInvalid
from sesender.feedback.parsing import load_json_object, parse_timestamp

__all__ = [
    "MAX_ENVELOPE_BYTES",
    "MESSAGE_TYPES",
    "MessageType",
    "RejectionReason",
    "SnsEnvelope",
    "SnsVerifier",
    "SnsVerifierStatistics",
    "check_cert_url",
    "check_subscribe_url",
    "parse_envelope",
    "string_to_sign",
]

MessageType = Literal["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"]
"""The three real SNS message types (not listmonk's misspelt ``UnsubscriptionConfirmation``)."""

MESSAGE_TYPES: Final[frozenset[str]] = frozenset(get_args(MessageType))

RejectionReason = Literal[
    "type",
    "missing_key",
    "topic",
    "signature_version",
    "cert_url",
    "too_old",
    "in_future",
    "cert_fetch",
    "cert_parse",
    "cert_validity",
    "cert_subject",
    "cert_key",
    "signature",
]
"""Which check refused a message; the keys of :attr:`SnsVerifierStatistics.rejected`."""

MAX_ENVELOPE_BYTES: Final = 256 * 1024
"""Largest body :func:`parse_envelope` reads. SES events are a few KB (SES truncates the headers it
copies at 10 KB); the cap only keeps a hostile body from costing memory and JSON parsing time."""

MAX_CERTIFICATE_BYTES: Final = 64 * 1024
"""An SNS signing certificate is about 2 KB of PEM; anything far larger is not one."""

SNS_CERTIFICATE_SUBJECT: Final = "sns.amazonaws.com"
"""The subject CN of every genuine SNS signing certificate (2014 to today)."""

_SIGNATURE_ALGORITHMS: Final[Mapping[str, Callable[[], hashes.HashAlgorithm]]] = MappingProxyType(
    {"1": hashes.SHA1, "2": hashes.SHA256}
)

# Printable ASCII without space: identifiers SNS generates (UUIDs, tokens) never need more, and
# refusing newlines keeps one signed field from smuggling text into the next in string_to_sign.
_PRINTABLE: Final = r"[\x21-\x7e]"
_MESSAGE_ID = re.compile(_PRINTABLE + "{1,256}", re.ASCII)
_TOKEN = re.compile(_PRINTABLE + "{1,4096}", re.ASCII)
_SIGNATURE_VERSION = re.compile(_PRINTABLE + "{1,16}", re.ASCII)
_URL_TEXT = re.compile(_PRINTABLE + "{1,4096}", re.ASCII)
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
_TOPIC_ARN = re.compile(
    r"arn:aws(?:-[a-z]+)*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}(?:\.fifo)?", re.ASCII
)
_SNS_HOST = re.compile(r"sns\.[a-z0-9-]{3,}\.amazonaws\.com(?:\.cn)?", re.ASCII)
_CERT_PATH = re.compile(r"/SimpleNotificationService-[0-9A-Za-z_-]+\.pem", re.ASCII)
_MAX_SIGNATURE_BYTES: Final = 1024  # RSA-8192; SNS uses 2048-bit keys (256-byte signatures)
_MIN_RSA_KEY_BITS: Final = 2048


@dataclass(frozen=True, slots=True)
class SnsEnvelope:
    """One parsed SNS message, not yet verified.

    The signed fields are ``type``, ``message_id``, ``topic_arn``, ``message``, ``timestamp``, and
    ``subject`` for Notifications or ``subscribe_url`` and ``token`` for the two confirmation
    types; each of those is only read for the types whose signature covers it, so no unsigned
    value reaches a caller through them. ``signing_cert_url`` and ``signature_version`` are not
    signed but are checked by :class:`SnsVerifier` in their own ways (an altered version changes
    the hash); ``unsubscribe_url`` and ``raw`` (the whole parsed body, ``MessageAttributes``
    included) are not signed and must not be trusted. ``timestamp_text`` is the Timestamp exactly
    as sent, because that string, not the parsed datetime, is what AWS signed. The token and URLs
    are kept out of ``repr`` because they are credentials (anyone holding them can (un)subscribe).
    """

    type: MessageType
    message_id: str
    topic_arn: str
    message: str
    timestamp: datetime
    timestamp_text: str
    signature_version: str
    signature: bytes = field(repr=False)
    signing_cert_url: str
    subject: str | None = None
    subscribe_url: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    unsubscribe_url: str | None = field(default=None, repr=False)
    raw: Mapping[str, object] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )


def _is_message_type(value: str) -> TypeGuard[MessageType]:
    return value in MESSAGE_TYPES


def _required_text(
    document: Mapping[str, object], key: str, pattern: re.Pattern[str] | None
) -> str:
    value = document.get(key)
    if value is None:
        raise SnsMalformed(f"SNS message has no {key}")
    if not isinstance(value, str):
        raise SnsMalformed(f"SNS message {key} must be a string, not {_json_type(value)}")
    if pattern is not None and pattern.fullmatch(value) is None:
        raise SnsMalformed(f"SNS message {key} is not in the expected format")
    return value


def _aliased_text(document: Mapping[str, object], key: str, lambda_key: str) -> str | None:
    """Read ``key`` or its Lambda spelling (ref §1.8), refusing a body that carries both."""
    if key in document and lambda_key in document:
        raise SnsMalformed(f"SNS message has both {key} and {lambda_key}")
    name = lambda_key if lambda_key in document else key
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise SnsMalformed(f"SNS message {name} must be a string, not {_json_type(value)}")
    return value


def _json_type(value: object) -> str:
    if isinstance(value, dict):
        return "a JSON object"
    if isinstance(value, list):
        return "a JSON array"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number" if isinstance(value, int | float) else "a string"


def parse_envelope(body: bytes, *, max_bytes: int = MAX_ENVELOPE_BYTES) -> SnsEnvelope:
    """Parse a webhook body into an :class:`SnsEnvelope`, checking shape but not authenticity.

    Raises :class:`SnsMalformed` for a body over ``max_bytes``, invalid UTF-8 or JSON, a body
    that is not an object, an unknown ``Type``, a missing or mistyped key (including moto's
    ``Message`` sent as an object instead of a string), a Timestamp that is not ISO 8601 with a
    zone, or a ``Signature`` that is not strict base64. Lambda key spellings (``SigningCertUrl``,
    ``UnsubscribeUrl``, ``"Subject": null``) are accepted. Unknown keys (``MessageAttributes``) are
    ignored: they are not signed.
    """
    if len(body) > max_bytes:
        raise SnsMalformed(f"SNS message body is larger than {max_bytes} bytes")
    document = load_json_object(bytes(body), what="SNS message body")

    message_type = document.get("Type")
    if message_type is None:
        raise SnsMalformed("SNS message has no Type")
    if not isinstance(message_type, str):
        raise SnsMalformed(f"SNS message Type must be a string, not {_json_type(message_type)}")
    if not _is_message_type(message_type):
        raise SnsMalformed(f"unknown SNS message Type {message_type[:64]!r}")

    message = _required_text(document, "Message", None)
    timestamp_text = _required_text(document, "Timestamp", None)
    signature_text = _required_text(document, "Signature", None)
    try:
        signature = base64.b64decode(signature_text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SnsMalformed("SNS message Signature is not valid base64") from exc
    if not signature or len(signature) > _MAX_SIGNATURE_BYTES:
        raise SnsMalformed("SNS message Signature has an impossible length")

    signing_cert_url = _aliased_text(document, "SigningCertURL", "SigningCertUrl")
    if signing_cert_url is None:
        raise SnsMalformed("SNS message has no SigningCertURL")

    subject: str | None = None
    subscribe_url: str | None = None
    token: str | None = None
    if message_type == "Notification":
        subject_value = document.get("Subject")
        if subject_value is not None:
            if not isinstance(subject_value, str):
                raise SnsMalformed("SNS message Subject must be a string or null")
            if _CONTROL_CHARACTERS.search(subject_value):
                raise SnsMalformed("SNS message Subject contains control characters")
            subject = subject_value
    else:
        subscribe_url = _required_text(document, "SubscribeURL", _URL_TEXT)
        token = _required_text(document, "Token", _TOKEN)

    return SnsEnvelope(
        type=message_type,
        message_id=_required_text(document, "MessageId", _MESSAGE_ID),
        topic_arn=_required_text(document, "TopicArn", _TOPIC_ARN),
        message=message,
        timestamp=parse_timestamp(timestamp_text, what="SNS message Timestamp"),
        timestamp_text=timestamp_text,
        signature_version=_required_text(document, "SignatureVersion", _SIGNATURE_VERSION),
        signature=signature,
        signing_cert_url=signing_cert_url,
        subject=subject,
        subscribe_url=subscribe_url,
        token=token,
        unsubscribe_url=_aliased_text(document, "UnsubscribeURL", "UnsubscribeUrl"),
        raw=MappingProxyType(document),
    )


def string_to_sign(envelope: SnsEnvelope) -> bytes:
    """Return the exact bytes AWS signed for ``envelope`` (ref §1.2).

    For each key of the message type's list, in byte-sort order, ``<Key>\\n<value>\\n`` with the
    JSON-unescaped value; a Notification's ``Subject`` is the only key that may be absent. The
    list for both confirmation types includes ``SubscribeURL`` and ``Token`` (the AWS JS validator
    got UnsubscribeConfirmation wrong here). Raises :class:`SnsMalformed` if a required key is
    missing, which only happens for an envelope built by hand.
    """
    fields: tuple[tuple[str, str | None], ...]
    if envelope.type == "Notification":
        fields = (
            ("Message", envelope.message),
            ("MessageId", envelope.message_id),
            ("Subject", envelope.subject),
            ("Timestamp", envelope.timestamp_text),
            ("TopicArn", envelope.topic_arn),
            ("Type", envelope.type),
        )
    else:
        fields = (
            ("Message", envelope.message),
            ("MessageId", envelope.message_id),
            ("SubscribeURL", envelope.subscribe_url),
            ("Timestamp", envelope.timestamp_text),
            ("Token", envelope.token),
            ("TopicArn", envelope.topic_arn),
            ("Type", envelope.type),
        )
    lines: list[str] = []
    for key, value in fields:
        if value is None:
            if key == "Subject":
                continue
            raise SnsMalformed(f"SNS {envelope.type} has no {key}")
        lines.append(f"{key}\n{value}\n")
    try:
        return "".join(lines).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SnsMalformed("SNS message contains text that is not valid Unicode") from exc


# --- URL checks --------------------------------------------------------------------------------


def _split_url(url: str, what: str) -> SplitResult:
    """Split ``url`` after the checks every mode shares (also with an operator pattern).

    Only printable ASCII: whitespace, control characters and non-ASCII (IDNA look-alikes, which
    urlsplit and HTTP clients normalise differently) are refused before parsing. Backslashes are
    refused because browsers and some clients read them as ``/``, so ``https://evil.com\\@sns...``
    means different hosts to different parsers. User information is refused in every mode.
    """
    if not isinstance(url, str) or _URL_TEXT.fullmatch(url) is None:
        raise SnsSignatureInvalid(f"{what} is empty, too long or not printable ASCII")
    if "\\" in url:
        raise SnsSignatureInvalid(f"{what} contains a backslash")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise SnsSignatureInvalid(f"{what} is not a valid URL") from exc
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise SnsSignatureInvalid(f"{what} carries user information")
    return parts


def _check_sns_origin(url: str, parts: SplitResult, what: str) -> None:
    """The one allowed-host rule: ``https://sns.<region>.amazonaws.com[.cn]`` on port 443.

    It pins the *host*, not "anything on amazonaws.com", because S3 buckets anyone can create are
    served from amazonaws.com too. ``parts.hostname`` is already lower-cased; the scheme must be
    written in lower case (AWS never writes it otherwise), and the netloc must be exactly the host
    (optionally ``:443``), which also refuses empty ports, IP literals and trailing dots.
    """
    if url.split(":", 1)[0] != "https":
        raise SnsSignatureInvalid(f"{what} must use https")
    host = parts.hostname or ""
    if _SNS_HOST.fullmatch(host) is None:
        raise SnsSignatureInvalid(f"{what} host is not sns.<region>.amazonaws.com[.cn]")
    if parts.netloc.lower() not in (host, f"{host}:443"):
        raise SnsSignatureInvalid(f"{what} names a port other than 443")


def check_cert_url(url: str, *, pattern: re.Pattern[str] | None = None) -> None:
    """Refuse a ``SigningCertURL`` that could serve a certificate not issued to SNS.

    Default rule (ref §1.4, stricter than the AWS SDKs): https, no user information, no port but
    443, no query, no fragment, host ``sns.<region>.amazonaws.com`` or ``.amazonaws.com.cn``, path
    ``/SimpleNotificationService-<id>.pem``. With ``pattern`` (the operator setting
    ``SNS_CERT_URL_PATTERN``, for tests that serve a certificate from loopback over http), the whole
    URL must ``fullmatch`` the pattern instead of the scheme, host and path rules; user information,
    backslashes and non-ASCII are still refused. Raises :class:`SnsSignatureInvalid`.
    """
    what = "SigningCertURL"
    parts = _split_url(url, what)
    if pattern is not None:
        if pattern.fullmatch(url) is None:
            raise SnsSignatureInvalid(f"{what} does not match the configured certificate pattern")
        return
    _check_sns_origin(url, parts, what)
    if "?" in url:
        raise SnsSignatureInvalid(f"{what} must not have a query")
    if "#" in url:
        raise SnsSignatureInvalid(f"{what} must not have a fragment")
    if _CERT_PATH.fullmatch(parts.path) is None:
        raise SnsSignatureInvalid(f"{what} path is not /SimpleNotificationService-<id>.pem")


def check_subscribe_url(
    url: str,
    *,
    topic_arn: str | None = None,
    token: str | None = None,
    pattern: re.Pattern[str] | None = None,
) -> None:
    """Refuse a ``SubscribeURL`` that is not SNS's own confirmation link (ref §1.6).

    Same host rule as :func:`check_cert_url` (or the operator ``pattern`` instead of it), path
    ``/``, no fragment, and a query with exactly one ``Action=ConfirmSubscription``, one
    ``TopicArn`` and one ``Token``. When ``topic_arn`` / ``token`` are given (the verified
    envelope's), the query must name exactly those, so a confirmation can only ever subscribe the
    topic that passed the allow-list. The query rules apply in pattern mode too: they are about
    what the URL does, not where it points. Raises :class:`SnsSignatureInvalid`.
    """
    what = "SubscribeURL"
    parts = _split_url(url, what)
    if "#" in url:
        raise SnsSignatureInvalid(f"{what} must not have a fragment")
    if pattern is not None:
        if pattern.fullmatch(url) is None:
            raise SnsSignatureInvalid(f"{what} does not match the configured SNS URL pattern")
    else:
        _check_sns_origin(url, parts, what)
        if parts.path != "/":
            raise SnsSignatureInvalid(f"{what} path must be /")
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=True)
    except ValueError as exc:
        raise SnsSignatureInvalid(f"{what} has a malformed query") from exc
    if query.get("Action") != ["ConfirmSubscription"]:
        raise SnsSignatureInvalid(f"{what} is not a ConfirmSubscription action")
    topics = query.get("TopicArn", [])
    if len(topics) != 1 or (topic_arn is not None and topics[0] != topic_arn):
        raise SnsSignatureInvalid(f"{what} does not name the message's TopicArn")
    tokens = query.get("Token", [])
    if len(tokens) != 1 or not tokens[0] or (token is not None and tokens[0] != token):
        raise SnsSignatureInvalid(f"{what} does not carry the message's Token")


# --- The verifier ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SnsVerifierStatistics:
    """A snapshot of one verifier's work.

    ``cache_hits`` counts certificates found in the cache or shared from another task's fetch;
    ``cache_misses`` counts lookups that started a fetch; ``fetches`` counts ``fetch_pem`` calls and
    ``fetch_failures`` those that raised or returned something that is not a usable certificate.
    ``rejected`` counts refusals by :data:`RejectionReason`.
    """

    cache_hits: int
    cache_misses: int
    fetches: int
    fetch_failures: int
    cached_certificates: int
    fetches_in_flight: int
    verified: int
    rejected: Mapping[str, int]


@dataclass(slots=True, eq=False)
class _PendingFetch:
    """One certificate download that other verifications of the same URL wait on."""

    done: trio.Event = field(default_factory=trio.Event)
    certificate: x509.Certificate | None = None
    failure: tuple[RejectionReason, str] | None = None


class SnsVerifier:
    """Checks that an :class:`SnsEnvelope` was signed by AWS SNS for an accepted topic, recently.

    Dependencies are injected so the verifier does no I/O itself: ``fetch_pem(url)`` downloads a
    certificate (the caller's httpx client, TLS on, no redirects, small size cap) and ``now()``
    returns the current aware UTC datetime. ``topic_arns`` is the allow-list (``None`` accepts any
    topic); ``cert_url_pattern`` is the operator's widening of the certificate URL rule, which also
    drops the certificate subject check (test certificates). ``require_signature_version_2``
    refuses SHA1 signatures once the topics are switched to version 2 (downgrade protection).

    A Timestamp is fresh from ``now - (max_age + future_skew)`` to ``now + future_skew`` (ref
    §1.5): SNS retries an HTTP delivery for at most an hour and keeps the original Timestamp, and
    clocks disagree a little in both directions. Older messages are replays or lost causes.

    Certificates are cached in a bounded LRU keyed by the full URL (SNS rotates certificates by
    publishing new URLs, so entries never go stale). Concurrent verifications needing the same
    uncached URL share one download; a failed download is never cached.
    """

    def __init__(
        self,
        *,
        fetch_pem: Callable[[str], Awaitable[bytes]],
        now: Callable[[], datetime],
        max_age: timedelta = timedelta(hours=1),
        future_skew: timedelta = timedelta(minutes=5),
        topic_arns: frozenset[str] | None = None,
        cert_url_pattern: re.Pattern[str] | None = None,
        cache_size: int = 64,
        require_signature_version_2: bool = False,
    ) -> None:
        if cache_size < 1:
            raise ValueError(f"certificate cache_size must be at least 1, got {cache_size}")
        if max_age <= timedelta(0) or future_skew < timedelta(0):
            raise ValueError("max_age must be positive and future_skew not negative")
        self._fetch_pem = fetch_pem
        self._now = now
        self._max_age = max_age
        self._future_skew = future_skew
        self._topic_arns = topic_arns
        self._cert_url_pattern = cert_url_pattern
        self._cache_size = cache_size
        self._require_v2 = require_signature_version_2
        self._cache: OrderedDict[str, x509.Certificate] = OrderedDict()
        self._in_flight: dict[str, _PendingFetch] = {}
        self._cache_hits = 0
        self._cache_misses = 0
        self._fetches = 0
        self._fetch_failures = 0
        self._verified = 0
        self._rejected: dict[str, int] = {}

    def statistics(self) -> SnsVerifierStatistics:
        """Return a frozen snapshot of cache use and of verdicts by reason."""
        return SnsVerifierStatistics(
            cache_hits=self._cache_hits,
            cache_misses=self._cache_misses,
            fetches=self._fetches,
            fetch_failures=self._fetch_failures,
            cached_certificates=len(self._cache),
            fetches_in_flight=len(self._in_flight),
            verified=self._verified,
            rejected=MappingProxyType(dict(self._rejected)),
        )

    def _reject(
        self, reason: RejectionReason, message: str, cause: BaseException | None = None
    ) -> NoReturn:
        self._rejected[reason] = self._rejected.get(reason, 0) + 1
        error = SnsCertificateUnavailable if reason == "cert_fetch" else SnsSignatureInvalid
        raise error(f"SNS message rejected ({reason}): {message}") from cause

    async def verify(self, envelope: SnsEnvelope, *, check_freshness: bool = True) -> None:
        """Return if ``envelope`` is authentic, fresh and for an accepted topic; else raise.

        ``check_freshness=False`` is for messages read from our own SQS queue: they may wait
        there longer than an hour while sesender is down, and only the queue's writers (SNS, by
        queue policy) can put them there, so their age proves nothing; the signature, topic and
        certificate checks still apply.

        Raises :class:`SnsSignatureInvalid` naming the failed check (see :data:`RejectionReason`),
        or :class:`SnsMalformed` for an envelope built by hand with impossible text. Always a
        checkpoint.
        """
        await trio.lowlevel.checkpoint()

        if envelope.type not in MESSAGE_TYPES:
            self._reject("type", f"unknown message Type {envelope.type[:64]!r}")
        if envelope.type != "Notification" and (
            envelope.subscribe_url is None or envelope.token is None
        ):
            self._reject("missing_key", f"{envelope.type} needs SubscribeURL and Token")
        if not (envelope.message_id and envelope.topic_arn and envelope.signature):
            self._reject("missing_key", "MessageId, TopicArn and Signature must not be empty")

        if self._topic_arns is not None and envelope.topic_arn not in self._topic_arns:
            self._reject("topic", f"TopicArn {envelope.topic_arn[:300]!r} is not allowed")

        make_algorithm = _SIGNATURE_ALGORITHMS.get(envelope.signature_version)
        if make_algorithm is None:
            self._reject("signature_version", "SignatureVersion must be 1 or 2")
        if self._require_v2 and envelope.signature_version != "2":
            self._reject("signature_version", "SignatureVersion 2 is required")

        try:
            check_cert_url(envelope.signing_cert_url, pattern=self._cert_url_pattern)
        except SnsSignatureInvalid as exc:
            self._reject("cert_url", str(exc), exc)

        now = self._now()
        if now.tzinfo is None:
            raise TypeError("SnsVerifier's now() must return an aware datetime")
        if check_freshness and envelope.timestamp < now - self._max_age - self._future_skew:
            self._reject("too_old", "Timestamp is older than the accepted window")
        if envelope.timestamp > now + self._future_skew:
            self._reject("in_future", "Timestamp is in the future")

        certificate = await self._certificate(envelope.signing_cert_url)

        if not (
            certificate.not_valid_before_utc
            <= envelope.timestamp
            <= certificate.not_valid_after_utc
        ):
            self._reject("cert_validity", "certificate was not valid at the message Timestamp")
        if self._cert_url_pattern is None:
            names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            if [name.value for name in names] != [SNS_CERTIFICATE_SUBJECT]:
                self._reject(
                    "cert_subject", f"certificate subject is not {SNS_CERTIFICATE_SUBJECT}"
                )
        try:
            public_key = certificate.public_key()
        except Exception as exc:  # pragma: no cover - a key algorithm cryptography cannot load
            self._reject("cert_key", "certificate key cannot be loaded", exc)
        if not isinstance(public_key, rsa.RSAPublicKey):
            self._reject("cert_key", "certificate key is not RSA")
        if public_key.key_size < _MIN_RSA_KEY_BITS:
            self._reject(
                "cert_key", f"certificate RSA key is shorter than {_MIN_RSA_KEY_BITS} bits"
            )

        try:
            public_key.verify(
                envelope.signature,
                string_to_sign(envelope),
                padding.PKCS1v15(),
                make_algorithm(),
            )
        except (InvalidSignature, ValueError) as exc:
            self._reject("signature", "signature does not match the signed fields", exc)
        self._verified += 1

    async def _certificate(self, url: str) -> x509.Certificate:
        """Return the certificate at ``url`` from the cache, another task's fetch, or a new one."""
        while True:
            cached = self._cache.get(url)
            if cached is not None:
                self._cache.move_to_end(url)
                self._cache_hits += 1
                return cached
            pending = self._in_flight.get(url)
            if pending is None:
                break
            await pending.done.wait()
            if pending.certificate is not None:
                self._cache_hits += 1
                return pending.certificate
            if pending.failure is not None:
                reason, message = pending.failure
                self._reject(reason, message)
            # The fetching task was cancelled before it finished: try again, maybe as the fetcher.

        self._cache_misses += 1
        pending = _PendingFetch()
        self._in_flight[url] = pending
        try:
            certificate = await self._fetch_certificate(url, pending)
            pending.certificate = certificate
            self._cache[url] = certificate
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return certificate
        finally:
            del self._in_flight[url]
            pending.done.set()

    async def _fetch_certificate(self, url: str, pending: _PendingFetch) -> x509.Certificate:
        """Download and parse one certificate; record a failure for the tasks waiting on it."""
        self._fetches += 1
        try:
            pem = await self._fetch_pem(url)
        except Exception as exc:  # the injected fetcher's errors, translated at this one boundary
            self._fail_fetch(
                pending, "cert_fetch", f"could not fetch it ({type(exc).__name__})", exc
            )
        if not isinstance(pem, bytes) or len(pem) > MAX_CERTIFICATE_BYTES:
            self._fail_fetch(pending, "cert_parse", "the download is not a small PEM document")
        try:
            return x509.load_pem_x509_certificate(pem)
        except Exception as exc:  # cryptography raises ValueError and, for odd DER, others
            self._fail_fetch(pending, "cert_parse", "the download is not a PEM certificate", exc)

    def _fail_fetch(
        self,
        pending: _PendingFetch,
        reason: RejectionReason,
        message: str,
        cause: BaseException | None = None,
    ) -> NoReturn:
        """Reject this verification and every one waiting on the same download, cache nothing."""
        self._fetch_failures += 1
        pending.failure = (reason, f"signing certificate unavailable: {message}")
        self._reject(reason, pending.failure[1], cause)

    def confirmation_url(self, envelope: SnsEnvelope) -> str:
        """Return the ``SubscribeURL`` to GET for a *verified* SubscriptionConfirmation.

        Only for ``SubscriptionConfirmation``: an UnsubscribeConfirmation's SubscribeURL
        re-subscribes, which must never happen automatically (ref §1.6). The URL must name the
        envelope's own TopicArn and Token. Raises :class:`SnsSignatureInvalid`.
        """
        if envelope.type != "SubscriptionConfirmation" or envelope.subscribe_url is None:
            raise SnsSignatureInvalid(f"an SNS {envelope.type} is not confirmed by visiting a URL")
        check_subscribe_url(
            envelope.subscribe_url,
            topic_arn=envelope.topic_arn,
            token=envelope.token,
            pattern=self._cert_url_pattern,
        )
        return envelope.subscribe_url
