"""``ACCESS_LOG``: one structured ``http_request`` line per request, never the query string."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import trio
from hypercorn.typing import ConnectionState, HTTPScope, ResponseSummary

from sesender.config import load_config
from sesender.errors import ConfigError
from sesender.http.server import AccessLogger, hypercorn_config
from sesender.logs import configure_logging

SCOPE: HTTPScope = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/v1/events/open",
    "raw_path": b"/v1/events/open",
    "query_string": b"token=secret-pixel-token",
    "root_path": "",
    "headers": [(b"host", b"localhost")],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 3000),
    "state": ConnectionState({}),
    "extensions": {},
}
RESPONSE: ResponseSummary = {"status": 200, "headers": []}


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """The service's JSON logging, into a buffer; the root logger is restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging("INFO", True, stream=stream)
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def access(environ: dict[str, str]) -> None:
    config = hypercorn_config(load_config(environ).server)
    assert isinstance(config.log, AccessLogger)
    trio.run(config.log.access, SCOPE, RESPONSE, 0.01234)


def test_the_setting_is_off_by_default_and_checked() -> None:
    assert load_config({}).server.access_log is False
    assert load_config({"ACCESS_LOG": "true"}).server.access_log is True
    assert load_config({}).public_settings()["access_log"] is False
    with pytest.raises(ConfigError, match="ACCESS_LOG"):
        load_config({"ACCESS_LOG": "sometimes"})


def test_one_json_line_per_request_without_the_query_string(json_lines: io.StringIO) -> None:
    access({"ACCESS_LOG": "true"})
    (line,) = json_lines.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["event"] == "http_request"
    assert entry["logger"] == "sesender.access"
    assert entry["level"] == "info"
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/v1/events/open", 200)
    assert entry["duration_ms"] == 12.3
    assert entry["message"] == "GET /v1/events/open 200"
    assert "secret-pixel-token" not in line
    assert "token" not in line


def test_nothing_is_logged_when_off(json_lines: io.StringIO) -> None:
    access({})
    assert json_lines.getvalue() == ""


def test_nothing_is_logged_above_info(json_lines: io.StringIO) -> None:
    logging.getLogger().setLevel(logging.WARNING)
    access({"ACCESS_LOG": "true"})
    assert json_lines.getvalue() == ""


def test_a_request_reported_without_an_answer_is_not_a_line(json_lines: io.StringIO) -> None:
    config = hypercorn_config(load_config({"ACCESS_LOG": "true"}).server)
    trio.run(config.log.access, SCOPE, None, 0.01)  # type: ignore[arg-type]  # hypercorn does
    assert json_lines.getvalue() == ""


def test_a_tracked_links_token_and_code_are_not_logged(json_lines: io.StringIO) -> None:
    config = hypercorn_config(load_config({"ACCESS_LOG": "true"}).server)
    assert isinstance(config.log, AccessLogger)
    scope: HTTPScope = {**SCOPE, "path": "/v1/events/click/secret-click-token/secret-code"}
    response: ResponseSummary = {"status": 302, "headers": []}
    trio.run(config.log.access, scope, response, 0.001)
    (line,) = json_lines.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["path"] == "/v1/events/click/…"
    assert "secret" not in line
