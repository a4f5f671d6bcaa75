"""The ``SendBulkEmail`` request body written by ``json.dumps`` rather than botocore's serializer.

botocore's rest-json serializer walks the service model for every value of the request: for a
bulk call of 50 entries (each with its destination, replacement data, headers and tags) that
walk was a third of the SES bulk path's CPU per recipient, on the one GIL the whole service
shares. What it produces for this operation is exactly ``json.dumps`` of the request as given:
every member the SES backend sends is a string, a list or a structure, none is renamed, none
goes in a header or the URL (the only other kind, an attachment's bytes, is never sent). So
:func:`install_bulk_body` hooks two of botocore's public client events for ``SendBulkEmail``
only:

- ``before-parameter-build`` (last, after botocore's own handlers and a ``Stubber``'s check of
  the full request): the body is written from the full request and kept in the call's context,
  and the entries are taken out of what botocore serializes;
- ``before-call`` (first, before anything that reads the request): the kept body replaces the
  one botocore serialized, before the request is signed and sent.

A unit test checks, byte for byte, that the body is the one botocore's serializer writes for
requests the backend builds. This relies on ``parameter_validation=False`` (the client's check
would see a request without its entries): :func:`~sesender.backends.ses.build_ses_client`
builds its client without it and installs the hooks.
"""

from __future__ import annotations

import json
from typing import Any

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
    context[CONTEXT_KEY] = json.dumps(params).encode("utf-8")
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
