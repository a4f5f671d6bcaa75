"""The operator dashboard in a real browser, against the real service.

Debian's ``chromium`` (installed by ``scripts/install --dev``), driven headless by Playwright's sync
API. Missing tooling is a failure, never a skip: CI must prove the page works. Every wait is an
``expect`` with a deadline; the page refreshes itself every 2 seconds.

The scenario: enter the key, watch a topic's bar move and complete, cancel a large topic from the
page (through its confirmation dialog), retry a topic's failures, check hostile topic ids render as
text (and no dialog ever opens), take ``docs/dashboard.png`` while a third topic is being sent,
check the 5- and 10-minute windows ask for 300 and 600 seconds and label their axis in whole
seconds or minutes, then a wrong key and a stale one; last, a send key is refused and a read key
sees the figures without retry or cancel.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e.harness import ServiceProcess, submit, topic_counts

try:
    from playwright.sync_api import (
        Browser,
        Dialog,
        Locator,
        Page,
        Response,
        expect,
        sync_playwright,
    )
except ImportError as exc:  # reported by the fixture as a failure, with the fix
    PLAYWRIGHT_ERROR: str | None = str(exc)
else:
    PLAYWRIGHT_ERROR = None

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: The committed screenshot is refreshed only on request (SESENDER_UPDATE_SCREENSHOT=1), so a
#: normal test run leaves the tree clean; otherwise the picture goes to a temporary folder.
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
WAIT = 10_000  # ms: one refresh is 2 s, a request a few ms
SENDING = 20_000  # ms: 103 emails at 20 per second, with room to spare
HOSTILE_TOPICS = ("<script>alert(1)</script>", '<img src=x onerror="alert(2)">')
#: The dashboard's axis labels start with a minus sign (U+2212), not a hyphen.
MINUS = "\N{MINUS SIGN}"
#: An x-axis label other than "now": a whole number of seconds or minutes, never a fraction.
READABLE_TICK = re.compile(MINUS + r"[1-9][0-9]{0,2} (s|min)")


def require_browser() -> None:
    """Fail (never skip) when the tooling is missing, saying how to get it."""
    if PLAYWRIGHT_ERROR is not None:
        pytest.fail(
            f"Playwright is not installed ({PLAYWRIGHT_ERROR}): run scripts/install --dev",
            pytrace=False,
        )
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: scripts/install --dev installs Debian's chromium with "
            "apt-get when run as root; otherwise run `apt-get install -y chromium` yourself",
            pytrace=False,
        )


@contextmanager
def launch_chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def topic_row(page: Page, topic: str) -> Locator:
    quoted = topic.replace("\\", "\\\\").replace('"', '\\"')
    return page.locator(f'tr.topic-row[data-topic-id="{quoted}"]')


def cell(row: Locator, field: str) -> Locator:
    return row.locator(f'td[data-field="{field}"]')


def test_the_dashboard_shows_and_controls_the_running_service(
    start_service: Callable[..., ServiceProcess],
) -> None:
    require_browser()
    service = start_service(
        SENDER_BACKEND="memory", MAX_SEND_PER_SECOND="20", WEBHOOK_ALLOW_PRIVATE="true"
    )
    with launch_chromium() as browser:
        check_dashboard(service, browser)


def check_dashboard(service: ServiceProcess, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, color_scheme="light")
    page = context.new_page()
    errors: list[str] = []
    dialogs: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))

    def native_dialog(dialog: Dialog) -> None:
        dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", native_dialog)

    # -- the key, asked once; /ready is public so the state shows even before it ----------------
    page.goto(f"{service.url}/dashboard")
    key_input = page.get_by_label("API key")
    expect(key_input).to_be_visible()
    expect(page.locator("#service-pill-text")).to_have_text("Ready", timeout=WAIT)
    key_input.fill(service.api_key)
    page.get_by_role("button", name="Open dashboard").click()
    expect(page.locator("#dashboard")).to_be_visible(timeout=WAIT)
    expect(page.locator("#service-state")).to_have_text("Ready", timeout=WAIT)
    expect(page.locator("#service-detail")).to_contain_text("backend memory")
    expect(page.locator("#service-detail")).to_contain_text("database ok")
    expect(page.locator("#sending-state")).to_have_text("Active")
    expect(page.locator("#configured-rate")).to_have_text("20", timeout=WAIT)
    expect(page.locator("#topics-empty")).to_be_visible()
    expect(page.locator("#storage-last-backup")).to_have_text("never", timeout=WAIT)
    expect(page.locator("#storage-disk")).to_have_text(re.compile(r"^[0-9.]+ [KMGT]?B$"))

    with service.client() as client:
        # -- topic 1: its bar moves, then completes (2 permanent rejections, 1 suppressed) ----
        assert client.put("/v1/suppressions/blocked@example.com").status_code == 200
        emails = [f"reader{i}@example.com" for i in range(100)]
        emails += ["reject-1@example.com", "reject-2@example.com", "blocked@example.com"]
        submit(client, topic="welcome-series", emails=emails)
        welcome = topic_row(page, "welcome-series")
        expect(welcome).to_be_visible(timeout=WAIT)
        bar = welcome.get_by_role("progressbar")
        expect(bar).to_have_attribute("aria-valuenow", re.compile(r"^[1-9][0-9]?$"), timeout=WAIT)
        expect(cell(welcome, "sent")).to_have_text(re.compile(r"^[1-9][0-9]?$"))
        expect(cell(welcome, "sent")).to_have_text("100", timeout=SENDING)
        expect(cell(welcome, "pending")).to_have_text("0", timeout=WAIT)
        expect(cell(welcome, "failed")).to_have_text("2")
        expect(cell(welcome, "suppressed")).to_have_text("1")
        expect(bar).to_have_attribute("aria-valuenow", "100")
        expect(welcome.locator(".status")).to_have_text("Done with failures")
        expect(welcome.get_by_role("button", name="Cancel")).to_be_disabled()
        expect(page.locator("#storage-emails")).to_have_text("103", timeout=WAIT)
        expect(page.locator("#storage-rows")).to_contain_text("1 suppressions")

        # Retry failed: permanent rejections are never requeued, and the page says so.
        welcome.get_by_role("button", name="Retry failed").click()
        expect(page.locator(".toast").last).to_contain_text("nothing to retry", timeout=WAIT)

        # -- topic 2: 2,000 emails, cancelled from the page through its confirmation --------
        submit(client, topic="spring-campaign", emails=[f"c{i}@example.com" for i in range(2000)])
        campaign = topic_row(page, "spring-campaign")
        expect(cell(campaign, "sent")).to_have_text(re.compile(r"^[1-9][0-9,]*$"), timeout=WAIT)
        expect(campaign.locator(".status")).to_have_text("Sending")
        campaign.get_by_role("button", name="Cancel").click()
        confirm = page.locator("#confirm")
        expect(confirm).to_be_visible()
        expect(confirm).to_contain_text("spring-campaign")
        confirm.get_by_role("button", name="Cancel topic").click()
        expect(confirm).to_be_hidden()
        expect(page.locator(".toast").last).to_contain_text("stopped", timeout=WAIT)
        expect(cell(campaign, "stopped")).to_have_text(re.compile(r"^[1-9][0-9,]*$"), timeout=WAIT)
        expect(cell(campaign, "pending")).to_have_text("0", timeout=WAIT)
        expect(campaign.locator(".status")).to_have_text("Cancelled")
        counts = topic_counts(client, "spring-campaign")
        assert counts["Stopped"] > 1000, counts
        assert counts["Created"] + counts["Processed"] == 0, counts

        # -- the chart, the screenshot (with one topic on its way) ---------------------------
        submit(client, topic="order-receipts", emails=[f"r{i}@example.com" for i in range(600)])
    receipts = topic_row(page, "order-receipts")
    expect(cell(receipts, "sent")).to_have_text(re.compile(r"^[1-9][0-9]{1,2}$"), timeout=WAIT)
    expect(page.locator("#queued")).not_to_have_text("0")
    page.get_by_role("button", name="1 min").click()
    expect(page.locator("#chart-summary")).to_contain_text("sent in the last 1 min", timeout=WAIT)
    expect(page.locator("#chart .sent-line")).to_have_count(1)
    expect(page.locator("#chart .limit-line")).to_have_count(1)
    expect(page.locator(".toast")).to_have_count(0, timeout=WAIT)
    page.mouse.move(0, 0)
    screenshot = (
        DOCS_SCREENSHOT
        if os.environ.get("SESENDER_UPDATE_SCREENSHOT") == "1"
        else Path(tempfile.mkdtemp()) / "dashboard.png"
    )
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000

    # -- hostile topic ids are text (after the screenshot, which shows realistic topics) -------
    with service.client() as client:
        # order-receipts would hold the queue for half a minute more: stop it first.
        assert client.delete("/v1/topics/order-receipts").status_code == 200
        for topic in HOSTILE_TOPICS:
            submit(client, topic=topic, emails=["someone@example.com"])
    for topic in HOSTILE_TOPICS:
        hostile = topic_row(page, topic)
        expect(hostile.locator(".topic-id")).to_have_text(topic, timeout=WAIT)
        expect(cell(hostile, "sent")).to_have_text("1", timeout=WAIT)
    expect(page.locator("script")).to_have_count(1)  # dashboard.js only
    expect(page.locator("img")).to_have_count(0)

    # -- webhook endpoints: status and last error, as text ---------------------------------------
    expect(page.locator("#webhooks-empty")).to_be_visible()
    with service.client() as client:
        hook_url = "http://127.0.0.1:9/<b>hook</b>"  # nothing listens on port 9: refused
        created = client.post("/v1/webhooks", json={"url": hook_url, "event_types": ["email.sent"]})
        assert created.status_code == 201, created.text
        assert client.post(f"/v1/webhooks/{created.json()['id']}/test").status_code == 202
    hook_row = page.locator("#webhook-rows tr").first
    expect(hook_row.locator("td").first).to_have_text(hook_url, timeout=WAIT)
    expect(hook_row.locator(".webhook-status")).to_have_text("failing", timeout=WAIT)
    expect(hook_row.locator(".webhook-error")).to_contain_text("ConnectError")
    expect(page.locator("#webhooks-empty")).to_be_hidden()
    expect(page.locator("b")).to_have_count(0)

    # -- each window asks for what its button says, and its axis labels are short ------------
    for button, seconds, label in (("5 min", 300, "5 min"), ("10 min", 600, "10 min")):
        with page.expect_response(asks_for_window(seconds), timeout=WAIT) as answer:
            page.get_by_role("button", name=button).click()
        assert answer.value.status == 200, answer.value.text()
        expect(page.locator("#chart-summary")).to_contain_text(
            f"sent in the last {label}", timeout=WAIT
        )
        ticks = page.locator("#chart text.axis:not(.axis-y)").all_text_contents()
        assert len(ticks) >= 4, ticks
        assert ticks[0] == "now", ticks
        unreadable = [tick for tick in ticks[1:] if not READABLE_TICK.fullmatch(tick)]
        assert unreadable == [], f"{button}: unreadable axis labels {unreadable} in {ticks}"
    assert ticks[-1] == f"{MINUS}10 min", ticks

    assert errors == [], f"the page logged errors: {errors}"
    assert dialogs == [], f"a native dialog opened: {dialogs}"

    # -- a wrong key is refused clearly, and another can be entered ---------------------------
    page.get_by_role("button", name="Change API key").click()
    expect(key_input).to_be_visible()
    key_input.fill("not-the-key")
    page.get_by_role("button", name="Open dashboard").click()
    expect(page.locator("#login-error")).to_have_text(
        re.compile("The API key was refused"), timeout=WAIT
    )
    expect(page.locator("#dashboard")).to_be_hidden()

    # A stored key that stopped working (rotated) brings the form back with the same message.
    page.evaluate("sessionStorage.setItem('sesender.apiKey', 'rotated-away')")
    page.reload()
    expect(page.locator("#login-error")).to_have_text(
        re.compile("The API key was refused"), timeout=WAIT
    )
    key_input.fill(service.api_key)
    page.get_by_role("button", name="Open dashboard").click()
    expect(topic_row(page, "welcome-series")).to_be_visible(timeout=WAIT)
    expect(page.locator("#login")).to_be_hidden()

    # -- scopes: a send key cannot open it; a read key sees the figures without retry/cancel ----
    with service.client() as client:
        keys = {
            scope: client.post("/v1/api-keys", json={"name": scope, "scopes": [scope]}).json()[
                "key"
            ]
            for scope in ("send", "read")
        }
    retry = topic_row(page, "welcome-series").locator("button[data-action=retry]")
    expect(retry).to_be_visible()
    page.get_by_role("button", name="Change API key").click()
    key_input.fill(keys["send"])
    page.get_by_role("button", name="Open dashboard").click()
    expect(page.locator("#login-error")).to_have_text(
        re.compile("needs a read or admin key"), timeout=WAIT
    )
    key_input.fill(keys["read"])
    page.get_by_role("button", name="Open dashboard").click()
    row = topic_row(page, "welcome-series")
    expect(row).to_be_visible(timeout=WAIT)
    expect(cell(row, "sent")).to_have_text("100")
    expect(row.locator("button[data-action=retry]")).to_be_hidden()
    expect(row.locator("button[data-action=cancel]")).to_be_hidden()

    refused = [e for e in errors if "401" not in e]
    assert refused == [], f"the page logged errors: {refused}"
    assert dialogs == [], f"a native dialog opened: {dialogs}"
    context.close()


def asks_for_window(seconds: int) -> Callable[[Response], bool]:
    """Matches the dashboard's request for the send rate over ``seconds``."""
    return lambda response: f"send-rate?seconds={seconds}" in response.url
