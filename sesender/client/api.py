"""A small typed HTTP client for a running sesender (the ``/v1`` API).

httpx errors and error responses are translated here, at this one boundary, into
:class:`~sesender.errors.ClientError`, whose message is one human-readable line::

    ClientError                 (in sesender.errors)
        status is None          the server could not be reached, did not answer in time, or
                                answered something that is not the sesender API
        status == 401           the server refused the API key
        status == 4xx / 5xx     the server's own ``{"error": ...}`` message

The transport is injectable (``httpx.MockTransport`` in tests); nothing here reads the environment.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from sesender import __version__
from sesender.errors import ClientError

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
#: The largest page ``GET /v1/suppressions`` serves.
MAX_SUPPRESSION_PAGE = 1000
MAX_ERROR_TEXT = 300


def _instant(value: object) -> datetime | None:
    """An ISO 8601 instant from a response, or None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def one_line(text: str) -> str:
    return " ".join(text.split())


# -- response records ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RejectedAddress:
    email: str
    reason: str


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """The answer to one ``POST /v1/messages``."""

    total: int
    success: int
    errors: int
    duplicates: int
    #: As the original: a non-empty ``scheduled_at`` was given (even a past one).
    scheduled: bool
    rejected: tuple[RejectedAddress, ...] = ()
    first_request_id: int | None = None
    replayed: bool = False
    #: When sending becomes due (``due_at``; None from servers that do not say).
    due_at: datetime | None = None

    def waits(self, now: datetime) -> bool:
        """Whether the emails wait for a time after ``now`` (rather than being sent at once).
        Without ``due_at`` (an older server, whose ``scheduled`` meant exactly that), the flag."""
        return self.scheduled if self.due_at is None else self.due_at > now


#: The statuses a topic's emails can have, in lifecycle order (the API's names).
PENDING_STATUSES = ("Created", "Processed")


@dataclass(frozen=True, slots=True)
class TopicStats:
    """``GET /v1/topics/{topic_id}``: request counts by status, result counts by event type."""

    request_counts: Mapping[str, int] = field(default_factory=dict)
    result_counts: Mapping[str, int] = field(default_factory=dict)

    def requests(self, status: str) -> int:
        return self.request_counts.get(status, 0)

    def results(self, event_type: str) -> int:
        return self.result_counts.get(event_type, 0)

    @property
    def pending(self) -> int:
        """Emails not finished yet: stored (``Created``) or inside the pipeline (``Processed``)."""
        return sum(self.requests(status) for status in PENDING_STATUSES)

    @property
    def total(self) -> int:
        return sum(self.request_counts.values())

    def as_json(self) -> dict[str, dict[str, int]]:
        return {
            "request_counts": dict(self.request_counts),
            "result_counts": dict(self.result_counts),
        }


@dataclass(frozen=True, slots=True)
class SuppressionEntry:
    email: str
    reason: str
    source: str
    detail: str | None
    created_at: str | None


@dataclass(frozen=True, slots=True)
class SuppressionPage:
    entries: tuple[SuppressionEntry, ...]
    #: pass as ``after`` to get the next page; None on the last page.
    next: str | None


# -- the client ------------------------------------------------------------------------------------


class SesenderClient:
    """Talks to one sesender at ``url`` with ``api_key``. Use as a context manager, or ``close()``.

    Every method returns a typed record or raises :class:`ClientError`.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        transport: httpx.BaseTransport | None = None,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
    ) -> None:
        self.url = url.strip().rstrip("/")
        try:
            base = httpx.URL(self.url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise ClientError(f"invalid sesender URL {url!r}: {exc}") from exc
        if base.scheme not in ("http", "https") or not base.host:
            raise ClientError(
                f"invalid sesender URL {url!r}: give it as http://host:port or https://host"
            )
        self._client = httpx.Client(
            base_url=base,
            headers={"X-API-KEY": api_key, "User-Agent": f"sesender-cli/{__version__}"},
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> SesenderClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- routes -------------------------------------------------------------------------------

    def submit(
        self,
        *,
        topic_id: str,
        subject: str,
        content: str,
        emails: Sequence[str | Mapping[str, Any]],
        scheduled_at: str | None = None,
        idempotency_key: str | None = None,
        sender: str | None = None,
        reply_to: str | None = None,
    ) -> SubmitResult:
        """``POST /v1/messages`` with one message (at most the server's recipient limit);
        ``emails`` are addresses or ``{"email": ..., "data": {...}}`` merge-field objects;
        ``sender`` is its ``from`` (None: the server's default sender)."""
        message: dict[str, Any] = {
            "topic_id": topic_id,
            "emails": list(emails),
            "subject": subject,
            "content": content,
        }
        if sender:
            message["from"] = sender
        if reply_to:
            message["reply_to"] = reply_to
        body: dict[str, Any] = {"messages": [message]}
        if scheduled_at:
            body["scheduled_at"] = scheduled_at
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = self._request("POST", "/v1/messages", json=body, headers=headers)
        data = self._object(response)
        rejected = tuple(
            RejectedAddress(email=str(item.get("email", "")), reason=str(item.get("reason", "")))
            for item in _list(data.get("rejected"))
            if isinstance(item, dict)
        )
        first = data.get("first_request_id")
        return SubmitResult(
            total=self._int(data, "total", response),
            success=self._int(data, "success", response),
            errors=self._int(data, "errors", response),
            duplicates=self._int(data, "duplicates", response, default=0),
            scheduled=bool(data.get("scheduled", False)),
            rejected=rejected,
            first_request_id=first if isinstance(first, int) else None,
            replayed=response.headers.get("Idempotent-Replayed") == "true",
            due_at=_instant(data.get("due_at")),
        )

    def topic_stats(self, topic_id: str) -> TopicStats:
        """``GET /v1/topics/{topic_id}`` (an unknown topic has empty counts)."""
        response = self._request("GET", topic_path(topic_id))
        data = self._object(response)
        return TopicStats(
            request_counts=self._counts(data, "request_counts", response),
            result_counts=self._counts(data, "result_counts", response),
        )

    def cancel_topic(self, topic_id: str) -> int:
        """``DELETE /v1/topics/{topic_id}``: how many emails were stopped."""
        response = self._request("DELETE", topic_path(topic_id))
        return self._int(self._object(response), "stopped", response)

    def retry_failed(self, topic_id: str) -> int:
        """``POST /v1/topics/{topic_id}/retry``: how many failed emails were requeued."""
        response = self._request("POST", topic_path(topic_id) + "/retry")
        return self._int(self._object(response), "requeued", response)

    def resume_sending(self) -> bool:
        """``POST /v1/sending/resume``: lift the reputation guard's hold on all sending; whether
        there was one."""
        response = self._request("POST", "/v1/sending/resume")
        return self._object(response).get("resumed") is True

    def resume_topic(self, topic_id: str) -> int | None:
        """``POST /v1/reputation/resume-topic`` (the topic id in the body, so any id works, the
        empty one included): lift the guard's hold on the topic; how many held emails were
        requeued, None when the topic was not held."""
        response = self._request("POST", "/v1/reputation/resume-topic", json={"topic_id": topic_id})
        data = self._object(response)
        if data.get("held") is not True:
            return None
        return self._int(data, "resumed", response)

    def message(self, request_id: int) -> dict[str, Any]:
        """``GET /v1/messages/{request_id}``: one email's status, attempts, error and events."""
        return self._object(self._request("GET", f"/v1/messages/{int(request_id)}"))

    def list_suppressions(
        self, *, email: str | None = None, after: str | None = None, limit: int = 100
    ) -> SuppressionPage:
        """One page of ``GET /v1/suppressions`` (``email`` filters by substring)."""
        params: dict[str, str | int] = {"limit": limit}
        if email:
            params["email"] = email
        if after:
            params["after"] = after
        response = self._request("GET", "/v1/suppressions", params=params)
        data = self._object(response)
        entries = tuple(
            self._suppression(item, response) for item in _list(data.get("suppressions"))
        )
        following = data.get("next")
        return SuppressionPage(
            entries=entries, next=following if isinstance(following, str) else None
        )

    def iter_suppressions(
        self, *, email: str | None = None, limit: int | None = None
    ) -> Iterator[SuppressionEntry]:
        """Every entry (following ``next``), or the first ``limit`` ones."""
        after: str | None = None
        remaining = limit
        while remaining is None or remaining > 0:
            size = (
                MAX_SUPPRESSION_PAGE if remaining is None else min(remaining, MAX_SUPPRESSION_PAGE)
            )
            page = self.list_suppressions(email=email, after=after, limit=size)
            yield from page.entries
            if remaining is not None:
                remaining -= len(page.entries)
            if page.next is None or not page.entries:
                return
            after = page.next

    def add_suppression(self, email: str, *, reason: str | None = None) -> SuppressionEntry:
        """``PUT /v1/suppressions/{email}`` (adds, or replaces the reason)."""
        body = {"reason": reason} if reason else None
        response = self._request("PUT", suppression_path(email), json=body)
        return self._suppression(self._object(response), response)

    def remove_suppression(self, email: str) -> str:
        """``DELETE /v1/suppressions/{email}``: the normalized address that was removed."""
        response = self._request("DELETE", suppression_path(email))
        removed = self._object(response).get("email")
        return removed if isinstance(removed, str) else email

    def create_api_key(
        self, name: str, scopes: Sequence[str], *, senders: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """``POST /v1/api-keys``: the new key's record, with ``key`` (shown only now)."""
        body: dict[str, Any] = {"name": name, "scopes": list(scopes)}
        if senders:
            body["senders"] = list(senders)
        return self._object(self._request("POST", "/v1/api-keys", json=body))

    def list_api_keys(self, *, revoked: bool = False) -> list[dict[str, Any]]:
        """``GET /v1/api-keys``: the named keys (and revoked ones if asked)."""
        response = self._request(
            "GET", "/v1/api-keys", params={"revoked": "true" if revoked else "false"}
        )
        return [
            item for item in _list(self._object(response).get("api_keys")) if isinstance(item, dict)
        ]

    def revoke_api_key(self, key_id: int) -> dict[str, Any]:
        """``DELETE /v1/api-keys/{id}``: the revoked key's record."""
        return self._object(self._request("DELETE", f"/v1/api-keys/{int(key_id)}"))

    # -- webhook endpoints ---------------------------------------------------------------------

    def list_webhooks(self) -> list[dict[str, Any]]:
        """``GET /v1/webhooks``: every endpoint with its status and last error."""
        response = self._request("GET", "/v1/webhooks")
        return [
            item for item in _list(self._object(response).get("webhooks")) if isinstance(item, dict)
        ]

    def webhook(self, endpoint_id: str) -> dict[str, Any]:
        """``GET /v1/webhooks/{id}``."""
        return self._object(self._request("GET", webhook_path(endpoint_id)))

    def create_webhook(
        self, url: str, *, event_types: Sequence[str] | None = None, description: str | None = None
    ) -> dict[str, Any]:
        """``POST /v1/webhooks``: the endpoint, with its secret (shown only in this answer)."""
        body: dict[str, Any] = {"url": url}
        if event_types:
            body["event_types"] = list(event_types)
        if description is not None:
            body["description"] = description
        return self._object(self._request("POST", "/v1/webhooks", json=body))

    def update_webhook(self, endpoint_id: str, **changes: Any) -> dict[str, Any]:
        """``PATCH /v1/webhooks/{id}`` (``enabled``, ``url``, ``event_types``, ``description``)."""
        return self._object(self._request("PATCH", webhook_path(endpoint_id), json=changes))

    def delete_webhook(self, endpoint_id: str) -> None:
        self._request("DELETE", webhook_path(endpoint_id))

    def test_webhook(self, endpoint_id: str) -> str:
        """``POST /v1/webhooks/{id}/test``: the queued test event's id."""
        response = self._request("POST", webhook_path(endpoint_id) + "/test")
        event_id = self._object(response).get("event_id")
        return event_id if isinstance(event_id, str) else ""

    def webhook_attempts(self, endpoint_id: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """``GET /v1/webhooks/{id}/attempts``: the latest attempts, newest first."""
        response = self._request(
            "GET", webhook_path(endpoint_id) + "/attempts", params={"limit": limit}
        )
        return [
            item for item in _list(self._object(response).get("attempts")) if isinstance(item, dict)
        ]

    # -- the one boundary -----------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise ClientError(
                f"cannot reach sesender at {self.url}: {connect_reason(exc)}"
            ) from exc
        except httpx.ConnectTimeout as exc:
            raise ClientError(f"cannot reach sesender at {self.url}: connection timed out") from exc
        except httpx.TimeoutException as exc:
            raise ClientError(
                f"sesender at {self.url} did not answer in time ({describe(exc)})", retryable=True
            ) from exc
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
            raise ClientError(
                f"the connection to sesender at {self.url} broke: {describe(exc)}", retryable=True
            ) from exc
        except httpx.HTTPError as exc:
            raise ClientError(f"request to sesender at {self.url} failed: {describe(exc)}") from exc
        if response.status_code >= 400:
            raise self._status_error(response)
        if response.is_redirect:  # the API never redirects; a proxy or a mangled path does
            location = response.headers.get("Location", "?")
            raise ClientError(
                f"unexpected redirect (HTTP {response.status_code}) from {method}"
                f" {response.request.url} to {location}",
                status=response.status_code,
            )
        return response

    def _status_error(self, response: httpx.Response) -> ClientError:
        status = response.status_code
        message = server_message(response)
        if status == 401:
            return ClientError(f"the server refused the API key ({message})", status=status)
        if status >= 500:
            return ClientError(
                f"sesender at {self.url} failed (HTTP {status}): {message}",
                status=status,
                retryable=status == 503,
            )
        return ClientError(f"{message} (HTTP {status})", status=status)

    def _object(self, response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except (ValueError, UnicodeDecodeError) as exc:
            raise self._unexpected(response, "not JSON") from exc
        if not isinstance(data, dict):
            raise self._unexpected(response, "not a JSON object")
        return data

    def _int(
        self,
        data: Mapping[str, Any],
        name: str,
        response: httpx.Response,
        default: int | None = None,
    ) -> int:
        value = data.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._unexpected(response, f"{name!r} is not a number")
        return value

    def _counts(
        self, data: Mapping[str, Any], name: str, response: httpx.Response
    ) -> dict[str, int]:
        value = data.get(name)
        if not isinstance(value, dict) or not all(
            isinstance(count, int) and not isinstance(count, bool) for count in value.values()
        ):
            raise self._unexpected(response, f"{name!r} is not a map of counts")
        return {str(key): count for key, count in value.items()}

    def _suppression(self, item: Any, response: httpx.Response) -> SuppressionEntry:
        if not isinstance(item, dict) or not isinstance(item.get("email"), str):
            raise self._unexpected(response, "a suppression entry has no email")
        return SuppressionEntry(
            email=item["email"],
            reason=str(item.get("reason") or ""),
            source=str(item.get("source") or ""),
            detail=_optional_str(item.get("detail")),
            created_at=_optional_str(item.get("created_at")),
        )

    def _unexpected(self, response: httpx.Response, problem: str) -> ClientError:
        return ClientError(
            f"unexpected answer to {response.request.method} {response.request.url}"
            f" (HTTP {response.status_code}, {problem}); is {self.url} a sesender server?",
            status=response.status_code,
        )


# -- helpers ---------------------------------------------------------------------------------------


def topic_path(topic_id: str) -> str:
    return "/v1/topics/" + quote(topic_id, safe="")


def webhook_path(endpoint_id: str) -> str:
    return "/v1/webhooks/" + quote(endpoint_id, safe="")


def suppression_path(email: str) -> str:
    return "/v1/suppressions/" + quote(email, safe="@")


def server_message(response: httpx.Response) -> str:
    """The server's ``{"error": ...}`` message, else the start of the body, else the reason."""
    try:
        data = response.json()
    except (ValueError, UnicodeDecodeError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str) and data["error"].strip():
        return one_line(data["error"])
    try:
        text = one_line(response.text)
    except (UnicodeDecodeError, LookupError):
        text = ""
    if text and not text.lstrip().startswith("<"):  # never echo an HTML page
        return text[:MAX_ERROR_TEXT]
    return response.reason_phrase or "no error message"


def connect_reason(exc: httpx.ConnectError) -> str:
    text = str(exc).lower()
    if "refused" in text:
        return "connection refused"
    if "name or service not known" in text or "nodename nor servname" in text:
        return "unknown host"
    return describe(exc)


def describe(exc: Exception) -> str:
    text = one_line(str(exc))
    return text or type(exc).__name__


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
