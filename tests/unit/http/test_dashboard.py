"""``/dashboard``: a static, public page with a strict Content-Security-Policy.

Served through the real app (Quart's test client) with a context holding only the configuration:
the page never touches the store. The files themselves are checked for what the policy relies on:
no inline script or style, no HTML built from strings in the script.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from importlib.resources import files

import pytest

from sesender.http.app import PUBLIC_ENDPOINTS, SesenderApp
from sesender.http.dashboard import CONTENT_SECURITY_POLICY, STATIC_FILES
from sesender.http.stats import MAX_SECONDS
from sesender.pipeline.rate_history import SendRateHistory

STRICT_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'"
)
CONTENT_TYPES = {
    "/dashboard": "text/html; charset=utf-8",
    "/dashboard/dashboard.js": "text/javascript; charset=utf-8",
    "/dashboard/dashboard.css": "text/css; charset=utf-8",
}
STATIC = files("sesender.http").joinpath("static")


def packaged(name: str) -> str:
    return STATIC.joinpath(name).read_text(encoding="utf-8")


class PageParser(HTMLParser):
    """Collects what the CSP check cares about: scripts, styles, links, inline attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.stylesheets: list[str] = []
        self.inline_styles = 0
        self.handlers: list[str] = []
        self.script_text = ""
        self.style_elements = 0
        self.ids: set[str] = set()
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script":
            self.scripts.append(attributes)
            self._in_script = True
        if tag == "style":
            self.style_elements += 1
        if tag == "link" and attributes.get("rel") == "stylesheet":
            self.stylesheets.append(attributes.get("href") or "")
        if "style" in attributes:
            self.inline_styles += 1
        identifier = attributes.get("id")
        if identifier:
            self.ids.add(identifier)
        self.handlers += [name for name in attributes if name.startswith("on")]

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text += data


def parsed_page() -> PageParser:
    parser = PageParser()
    parser.feed(packaged("dashboard.html"))
    return parser


# -- served, public, with the security headers ---------------------------------------------------


def test_the_dashboard_endpoint_is_public() -> None:
    assert "dashboard.dashboard" in PUBLIC_ENDPOINTS


def test_every_dashboard_route_is_the_public_endpoint(app: SesenderApp) -> None:
    rules = {rule.rule: rule.endpoint for rule in app.url_map.iter_rules()}
    assert {path: rules.get(path) for path in CONTENT_TYPES} == dict.fromkeys(
        CONTENT_TYPES, "dashboard.dashboard"
    )
    assert set(STATIC_FILES) == set(CONTENT_TYPES)


@pytest.mark.parametrize("path", sorted(CONTENT_TYPES))
async def test_each_file_is_served_without_a_key_with_strict_headers(
    app: SesenderApp, path: str
) -> None:
    response = await app.test_client().get(path)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == CONTENT_TYPES[path]
    assert response.headers["Content-Security-Policy"] == STRICT_POLICY
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["ETag"]
    assert await response.get_data() == STATIC_FILES[path].body


async def test_a_wrong_key_does_not_matter_to_the_page(app: SesenderApp) -> None:
    response = await app.test_client().get("/dashboard", headers={"X-API-KEY": "wrong"})
    assert response.status_code == 200


async def test_the_page_is_the_packaged_file_and_holds_no_data(app: SesenderApp) -> None:
    response = await app.test_client().get("/dashboard")
    body = await response.get_data(as_text=True)
    assert body == packaged("dashboard.html")
    assert "<title>sesender · dashboard</title>" in body


async def test_a_matching_etag_is_answered_with_304_and_the_same_headers(
    app: SesenderApp,
) -> None:
    client = app.test_client()
    first = await client.get("/dashboard/dashboard.js")
    etag = first.headers["ETag"]
    again = await client.get("/dashboard/dashboard.js", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert await again.get_data() == b""
    assert again.headers["ETag"] == etag
    assert again.headers["Content-Security-Policy"] == STRICT_POLICY
    stale = await client.get("/dashboard/dashboard.js", headers={"If-None-Match": '"old"'})
    assert stale.status_code == 200


@pytest.mark.parametrize(
    "path", ["/dashboard/", "/dashboard/other.js", "/dashboard/../openapi.json", "/dashboard.js"]
)
async def test_nothing_else_is_served_under_dashboard(app: SesenderApp, path: str) -> None:
    response = await app.test_client().get(path)
    assert response.status_code in {401, 404}, path
    assert response.headers["Content-Type"] == "application/json"


async def test_other_methods_are_405(app: SesenderApp) -> None:
    response = await app.test_client().post("/dashboard")
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}


async def test_the_api_still_needs_the_key(app: SesenderApp) -> None:
    response = await app.test_client().get("/v1/topics")
    assert response.status_code == 401


def test_the_policy_is_the_strict_one() -> None:
    assert CONTENT_SECURITY_POLICY == STRICT_POLICY


# -- what the policy relies on -------------------------------------------------------------------


def test_the_page_has_no_inline_script_or_style_and_loads_only_its_own_files() -> None:
    page = parsed_page()
    assert page.scripts == [{"src": "dashboard/dashboard.js", "defer": None}]
    assert page.script_text.strip() == ""
    assert page.stylesheets == ["dashboard/dashboard.css"]
    assert page.style_elements == 0
    assert page.inline_styles == 0
    assert page.handlers == []


def test_the_page_refers_to_the_api_relatively() -> None:
    """Relative URLs keep working behind a reverse proxy that adds a path prefix."""
    script = packaged("dashboard.js")
    assert re.findall(r"fetch\(([^,)]*)", script) == ["path"]
    calls = set(re.findall(r'api\(\s*[`"]([^`"?$]+)', script))
    assert calls == {
        "ready",
        "v1/stats/send-rate",
        "v1/topics",
        "v1/api-keys/current",
        "v1/sending/resume",
        "v1/stats/storage",
        "v1/webhooks",
    }
    assert not re.search(r"""["'`]/v1/""", script)


def test_the_script_never_parses_data_as_html() -> None:
    script = packaged("dashboard.js")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
    assert "new Function" not in script
    assert 'setAttribute("style"' not in script


def test_every_element_the_script_looks_up_exists() -> None:
    script = packaged("dashboard.js")
    wanted = set(re.findall(r'byId\("([^"]+)"\)', script))
    missing = wanted - parsed_page().ids
    assert not missing, f"dashboard.js looks up ids the page does not have: {sorted(missing)}"


def test_the_wrong_key_message_is_the_documented_one() -> None:
    assert "The API key was refused" in packaged("dashboard.js")


def test_the_window_buttons_ask_for_whole_minutes_the_server_serves() -> None:
    """The "10 min" button once asked for 599 s; each button asks for what its label says, and
    the script keeps a stored choice only if it is one of the buttons."""
    buttons = re.findall(
        r'<button type="button" data-seconds="(\d+)">(\d+) min</button>', packaged("dashboard.html")
    )
    assert buttons == [("60", "1"), ("300", "5"), ("600", "10")]
    assert max(int(seconds) for seconds, _ in buttons) <= MAX_SECONDS
    assert "[60, 300, 600].includes(state.windowSeconds)" in packaged("dashboard.js")


def test_the_send_rate_history_holds_the_ten_minute_window() -> None:
    assert MAX_SECONDS == 600
    snapshot = SendRateHistory(now_ms=lambda: 1_000_000).snapshot(600)
    assert len(snapshot) == 600
    assert (snapshot[0][0], snapshot[-1][0]) == (400, 999)
