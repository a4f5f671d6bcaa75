"""The ``SendBulkEmail`` request body written by ``orjson`` rather than botocore's serializer.

botocore's rest-json serializer walks the service model for every value of the request: for a
bulk call of 50 entries (each with its destination, replacement data, headers and tags) that
walk was a third of the SES bulk path's CPU per recipient. What it produces for this operation
is ``json.dumps`` of the request as given: every member the SES backend sends is a string, a list
or a structure, none is renamed, none goes in a header or the URL (the only other kind, an
attachment's bytes, is never sent). So the body is the request written as JSON directly, by
``orjson``: the same JSON document (same members, same values) in other bytes (no spaces,
non-ASCII characters as UTF-8 rather than escaped, both valid JSON as SES reads it), in
about a sixteenth of the CPU ``json.dumps`` takes (0.02 against 0.35 ms for 50 entries,
docs/performance.md, "Issue 13, fifth pass"). :func:`install_bulk_body` hooks two of botocore's
public client events for ``SendBulkEmail`` only:

- ``before-parameter-build`` (last, after botocore's own handlers and a ``Stubber``'s check of
  the full request): the body is written from the full request and kept in the call's context,
  and the entries are taken out of what botocore serializes;
- ``before-call`` (first, before anything that reads the request): the kept body replaces the
  one botocore serialized, before the request is signed and sent.

A unit test checks that the body is the JSON document botocore's serializer writes for requests
the backend builds. This relies on ``parameter_validation=False`` (the client's check would see a
request without its entries): :func:`~sesender.backends.ses.build_ses_client` builds its client
without it and installs the hooks. Text with a lone UTF-16 surrogate, which ``orjson`` refuses,
never gets here: the API refuses it in every field a request is built from.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["install_bulk_body"]

OPERATION = "sesv2.SendBulkEmail"
# The entries are the bulk of the request: everything else is serialized by botocore as usual.
ENTRIES = "BulkEmailEntries"
# Where the written body waits in botocore's per-call context between the two events.
CONTEXT_KEY = "sesender_bulk_body"


def write_body(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    """Write the body from the full request; leave botocore a request without the entries."""
    if ENTRIES not in params:
        return
    context[CONTEXT_KEY] = orjson.dumps(params)
    del params[ENTRIES]


def put_body(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    """Replace the body botocore serialized (without the entries) by the written one."""
    body = context.pop(CONTEXT_KEY, None)
    if body is not None:
        params["body"] = body


def install_bulk_body(client: Any) -> None:
    """Hook :func:`write_body` and :func:`put_body` on ``client``'s ``SendBulkEmail`` calls."""
    events = client.meta.events
    events.register_last(
        f"before-parameter-build.{OPERATION}", write_body, unique_id="sesender-bulk-body-write"
    )
    events.register_first(f"before-call.{OPERATION}", put_body, unique_id="sesender-bulk-body-put")
