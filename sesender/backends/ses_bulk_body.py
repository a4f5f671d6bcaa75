"""The ``SendBulkEmail`` bodies written and read by ``orjson`` rather than by botocore's model walk.

botocore's rest-json serializer walks the service model for every value of the request: for a
bulk call of 50 entries (each with its destination, replacement data, headers and tags) that
walk was a third of the SES bulk path's CPU per recipient. What it produces for this operation
is ``json.dumps`` of the request as given: every member the SES backend sends is a string, a list
or a structure, none is renamed, none goes in a header or the URL (the only other kind, an
attachment's bytes, is never sent). So the body is the request written as JSON directly, by
``orjson``: the same JSON document (same members, same values) in other bytes (no spaces,
non-ASCII characters as UTF-8 rather than escaped, both valid JSON as SES reads it), in
about a sixteenth of the CPU ``json.dumps`` takes (0.02 against 0.35 ms for 50 entries,
docs/performance.md, "Issue 13, fifth pass"). :func:`install_bulk_body` hooks three of botocore's
public client events for ``SendBulkEmail`` only:

- ``before-parameter-build`` (last, after botocore's own handlers and a ``Stubber``'s check of
  the full request): the body is written from the full request and kept in the call's context,
  and the entries are taken out of what botocore serializes;
- ``before-call`` (first, before anything that reads the request): the kept body replaces the
  one botocore serialized, before the request is signed and sent;
- ``before-parse`` (the answer): a successful answer's ``BulkEmailEntryResults`` are read by
  ``orjson`` and handed to botocore's customized answer, and botocore parses an empty body
  (:func:`read_answer`). Parsing the 50 entry results through the model cost about a tenth of
  the SES client process's CPU per call (0.15 to 0.3 of 1.6 to 2.6 ms, docs/performance.md,
  "Issue 13, eighth pass"). The parser reads an answer as the JSON it is, member by member, when
  every entry is an object of string members of the model's ``BulkEmailEntryResult`` (named as
  in the JSON): only such an answer is taken; any other (an error status, a ``null``, a member
  the model does not know or does not type as a string, a key beside the results) is parsed by
  botocore as before. A unit test compares both readings.

A unit test checks that the body is the JSON document botocore's serializer writes for requests
the backend builds. This relies on ``parameter_validation=False`` (the client's check would see a
request without its entries): :func:`~sesender.backends.ses.build_ses_client` builds its client
without it and installs the hooks. Text with a lone UTF-16 surrogate, which ``orjson`` refuses,
never gets here: the API refuses it in every field a request is built from.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import orjson

__all__ = ["install_bulk_body", "read_answer"]

OPERATION = "sesv2.SendBulkEmail"
# The entries are the bulk of the request: everything else is serialized by botocore as usual.
ENTRIES = "BulkEmailEntries"
# Where the written body waits in botocore's per-call context between the two events.
CONTEXT_KEY = "sesender_bulk_body"
# The answer's one member (``SendBulkEmailResponse``).
RESULTS = "BulkEmailEntryResults"
# What botocore parses when the results were read here: an answer with no members.
EMPTY_BODY = b"{}"


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


def read_answer(
    response_dict: dict[str, Any],
    customized_response_dict: dict[str, Any],
    *,
    entry_members: frozenset[str],
    **_: Any,
) -> None:
    """Read a successful answer's entry results, when botocore would read them as they are.

    ``entry_members`` are the string members of the model's ``BulkEmailEntryResult`` (see the
    module docstring). Anything else is left in the body for botocore's parser, unchanged.
    """
    body = response_dict.get("body")
    if response_dict.get("status_code") != 200 or not isinstance(body, bytes):
        return
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    if type(answer) is not dict or answer.keys() != {RESULTS}:
        return
    results = answer[RESULTS]
    if type(results) is not list:
        return
    for entry in results:
        if type(entry) is not dict or not entry.keys() <= entry_members:
            return
        for value in entry.values():
            if type(value) is not str:
                return
    customized_response_dict[RESULTS] = results
    response_dict["body"] = EMPTY_BODY


def string_members(client: Any) -> frozenset[str]:
    """The members of ``SendBulkEmail``'s entry results that botocore reads as JSON strings
    under their own names: what :func:`read_answer` may take as they are."""
    model = client.meta.service_model.operation_model("SendBulkEmail").output_shape
    entry = model.members[RESULTS].member
    return frozenset(
        name
        for name, shape in entry.members.items()
        if shape.type_name == "string" and shape.serialization.get("name", name) == name
    )


def install_bulk_body(client: Any) -> None:
    """Hook :func:`write_body`, :func:`put_body` and :func:`read_answer` on ``client``'s
    ``SendBulkEmail`` calls."""
    events = client.meta.events
    events.register_last(
        f"before-parameter-build.{OPERATION}", write_body, unique_id="sesender-bulk-body-write"
    )
    events.register_first(f"before-call.{OPERATION}", put_body, unique_id="sesender-bulk-body-put")
    events.register(
        f"before-parse.{OPERATION}",
        partial(read_answer, entry_members=string_members(client)),
        unique_id="sesender-bulk-answer-read",
    )
