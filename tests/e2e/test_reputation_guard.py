"""The reputation guard end to end: the real service, the fake SES, signed SNS feedback.

One service (SES backend, bulk mode, 100 emails per second) sends through ``bench.fake_ses``.
A feeder thread plays SES's feedback as the emails go out: it long-polls the fake for the
messages it accepted and, for each one to a ``bounce-`` address, posts a signed SNS bounce
notification (Permanent) to ``/v1/events/results``, and for each one to a ``complain-`` address a
complaint, with the message's own id and tags, as SES's event publishing does. So bounces come
back while the list is still being sent, as they would from a bad list.

The module's tests run in order on the one service:

1. a topic of 2,000 recipients of which every tenth hard-bounces is held by the guard after
   about 200 sends, most of its emails ``Held``, while another topic keeps sending to the end;
   the dashboard (chromium) shows the held topic with its Resume button;
2. an account-wide run past the complaint threshold holds all sending (with the default
   ``GUARD_MIN_SENDS`` of 1,000); the hold survives a restart (the dashboard shows it, with its
   Resume sending button), ``sesender resume`` lifts it and
   the queue drains; nothing was ``Failed`` by the guard at any point;
3. resuming the held topic requeues its held emails; cancelling it stops what is left.

A second, small service checks the account monitor's ``GetAccount`` polls against the fake.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.fake_ses_support import FakeSes, running_fake_ses
from tests.e2e.harness import (
    ServiceProcess,
    base_env,
    console_script,
    submit,
    topic_counts,
    wait_for,
    wait_topic,
)
from tests.e2e.sns_support import LOOPBACK_PATTERN, SesKind, SnsMinter, post_sns
from tests.e2e.test_dashboard_browser import (
    WAIT,
    cell,
    launch_chromium,
    require_browser,
    topic_row,
)

with contextlib.suppress(ImportError):  # require_browser() reports it as a failure
    from playwright.sync_api import Browser, Page, expect

pytestmark = pytest.mark.e2e

API_KEY = "e2e-guard-key"
BAD_TOPIC = "guard-bad-list"
GOOD_TOPIC = "guard-good-list"
COMPLAINT_TOPIC = "guard-complaints"
BEHIND_TOPIC = "guard-behind"


class Feeder:
    """Plays SES's feedback for the messages the fake accepts, as they are accepted."""

    def __init__(self, fake: FakeSes, service_url: str, minter: SnsMinter) -> None:
        self.fake = fake
        self.minter = minter
        self.client = httpx.Client(base_url=service_url, timeout=30)
        self.seen = 0
        self.posted: dict[str, int] = {"bounce": 0, "complaint": 0}
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="ses-feedback", daemon=True)

    def run(self) -> None:
        poll = httpx.Client(base_url=self.fake.url, timeout=30)
        try:
            while not self.stop.is_set():
                reply = poll.get("/_bench/messages", params={"since": self.seen, "wait": 1})
                messages: list[dict[str, Any]] = reply.json()
                self.seen += len(messages)
                for message in messages:
                    self.answer(message)
        except Exception as exc:  # reported by the test, not lost in a thread
            self.errors.append(repr(exc))
        finally:
            poll.close()

    def answer(self, message: dict[str, Any]) -> None:
        recipient: str = message["to"]
        kind: SesKind
        if recipient.startswith("bounce-"):
            kind = "bounce"
        elif recipient.startswith("complain-"):
            kind = "complaint"
        else:
            return
        tags: dict[str, list[str]] = {}
        for tag in message["tags"]:
            tags.setdefault(tag["Name"], []).append(tag["Value"])
        body = self.minter.ses_notification(
            kind,
            "event",
            ses_message_id=message["message_id"],
            recipient=recipient,
            tags=tags,
            **({"bounce_type": "Permanent"} if kind == "bounce" else {}),
        )
        response = post_sns(self.client, body)
        if response.status_code != 200:
            self.errors.append(f"{kind} for {recipient}: {response.status_code} {response.text}")
        self.posted[kind] += 1

    def __enter__(self) -> Feeder:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.client.close()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeSes]:
    with running_fake_ses() as server:
        yield server


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("guard")


def guard_env(fake: FakeSes, workdir: Path) -> dict[str, str]:
    return base_env(
        workdir,
        **fake.service_env(
            API_KEY=API_KEY,
            SNS_CERT_URL_PATTERN=LOOPBACK_PATTERN,
            MAX_SEND_PER_SECOND="100",
            GUARD_CHECK_SECONDS="1",
        ),
    )


class Deployment:
    """The module's service process; ``restart`` replaces it with a new process on the same
    database (and points the feeder at it)."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.service = ServiceProcess(workdir, env).start()
        self.started = [self.service]
        self.feeder: Feeder | None = None

    def restart(self) -> ServiceProcess:
        assert self.service.stop() == 0, "\n".join(self.service.raw_lines[-20:])
        self.service = ServiceProcess(self.workdir, self.env).start()
        self.started.append(self.service)
        if self.feeder is not None:
            self.feeder.client.base_url = httpx.URL(self.service.url)
        return self.service


@pytest.fixture(scope="module")
def deployment(fake: FakeSes, workdir: Path) -> Iterator[Deployment]:
    running = Deployment(workdir, guard_env(fake, workdir))
    try:
        yield running
    finally:
        for process in running.started:
            process.kill()


@pytest.fixture(scope="module")
def feeder(fake: FakeSes, deployment: Deployment, minter: SnsMinter) -> Iterator[Feeder]:
    with Feeder(fake, deployment.service.url, minter) as running:
        deployment.feeder = running
        yield running
    assert running.errors == []


def api(service: ServiceProcess) -> httpx.Client:
    return service.client()


def ready(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/ready")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def metric(client: httpx.Client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name}")


def total(counts: dict[str, int]) -> int:
    return sum(counts.values())


def test_a_bouncing_topic_is_held_while_another_keeps_sending(
    deployment: Deployment, feeder: Feeder
) -> None:
    service = deployment.service
    with api(service) as client:
        bad = [f"{'bounce' if i % 10 == 0 else 'reader'}-{i}@bad-list.example" for i in range(2000)]
        submit(client, topic=BAD_TOPIC, emails=bad)
        submit(client, topic=GOOD_TOPIC, emails=[f"reader-{i}@good.example" for i in range(500)])

        held = wait_topic(client, BAD_TOPIC, status="Held", count=1, timeout=60)
        event = wait_for(lambda: service.find("topic_held"), timeout=10, what="topic_held log")
        assert event["topic_id"] == BAD_TOPIC
        assert "GUARD_BOUNCE_RATE" in event["reason"]
        assert event["level"] == "error"  # an ERROR log line: a Sentry event when SENTRY_DSN is set

        # The other topic keeps sending to the last address.
        good = wait_topic(client, GOOD_TOPIC, count=500, timeout=60)
        assert good.get("Failed", 0) == 0
        # Everything of the held topic has settled: nothing queued or in the pipeline.
        bad_counts = wait_for(
            lambda: (
                (counts := topic_counts(client, BAD_TOPIC))
                and counts.get("Created", 0) + counts.get("Processed", 0) == 0
                and counts
            ),
            timeout=30,
            what="the held topic settled",
        )
        assert total(bad_counts) == 2000, bad_counts
        assert bad_counts["Failed"] == 0
        assert bad_counts["Stopped"] == 0
        assert bad_counts["Held"] >= 1500, bad_counts  # most of the list never went out
        assert 200 <= bad_counts["Sent"] <= 500, bad_counts
        assert held["Held"] >= 1
        # What was sent is exactly what the fake SES accepted for the topic.
        sent_to = {m["to"] for m in feeder.fake.messages() if m["to"].endswith("@bad-list.example")}
        assert len(sent_to) == bad_counts["Sent"]

        state = ready(client)
        assert state["sending"] == "active"
        assert state["sending_held"] is False
        assert state["held_topics"] == [BAD_TOPIC]
        reputation = client.get("/v1/reputation").json()
        assert [t["topic_id"] for t in reputation["held_topics"]] == [BAD_TOPIC]
        assert reputation["sending_held"] is False
        assert metric(client, "sesender_topics_held") == 1
        assert metric(client, 'sesender_guard_holds_total{scope="topic"}') == 1


def open_dashboard(browser: Browser, service: ServiceProcess) -> Page:
    page = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
    page.goto(f"{service.url}/dashboard")
    page.get_by_label("API key").fill(API_KEY)
    page.get_by_role("button", name="Open dashboard").click()
    expect(page.locator("#dashboard")).to_be_visible(timeout=WAIT)
    return page


def test_the_dashboard_shows_the_held_topic(deployment: Deployment) -> None:
    require_browser()
    with launch_chromium() as browser:
        page = open_dashboard(browser, deployment.service)
        row = topic_row(page, BAD_TOPIC)
        expect(row.locator(".status")).to_have_text("Held by the guard", timeout=WAIT)
        held = counts_of_url(deployment.service, BAD_TOPIC)["Held"]
        expect(cell(row, "held")).to_have_text(f"{held:,}")
        expect(row.get_by_role("button", name="Resume")).to_be_visible()
        expect(row.get_by_role("button", name="Cancel")).to_be_enabled()
        good = topic_row(page, GOOD_TOPIC)
        expect(good.get_by_role("button", name="Resume")).to_be_hidden()
        expect(page.locator("#sending-state")).to_have_text("Active")
        expect(page.locator("#resume-sending")).to_be_hidden()


def counts_of_url(service: ServiceProcess, topic: str) -> dict[str, int]:
    with api(service) as client:
        return counts_of(client, topic)


def test_a_complaint_run_holds_all_sending_across_a_restart_until_resumed(
    deployment: Deployment, feeder: Feeder, fake: FakeSes
) -> None:
    service = deployment.service
    with api(service) as client:
        sent_before = total_sent(client)
        assert sent_before < 1000  # the account-wide minimum is not reached yet
        complaints = [
            f"{'complain' if i < 2 else 'reader'}-{i}@complaints.example" for i in range(800)
        ]
        submit(client, topic=COMPLAINT_TOPIC, emails=complaints)
        submit(
            client, topic=BEHIND_TOPIC, emails=[f"reader-{i}@behind.example" for i in range(300)]
        )

        state = wait_for(
            lambda: (body := ready(client))["sending_held"] and body,
            timeout=60,
            what="sending held by the guard",
        )
        assert state["sending"] == "paused"
        assert "GUARD_COMPLAINT_RATE" in state["sending_held_reason"]
        # Logged (an ERROR: a Sentry event) once the hold is recorded, a moment after the gate.
        wait_for(lambda: service.find("sending_held"), timeout=10, what="the sending_held log")
        assert metric(client, "sesender_sending_held") == 1
        assert metric(client, "sesender_guard_complaint_rate") >= 0.0008

    # The hold is durable: stop the service (gracefully), start it again on the same database.
    restarted = deployment.restart()
    accepted_while_stopped = len(fake.messages())
    with api(restarted) as client:
        state = ready(client)
        assert state["sending_held"] is True
        assert state["sending"] == "paused"
        # The pipeline has emails ready and waiting at the closed gate, and none goes out.
        wait_for(
            lambda: client.get("/v1/stats/send-rate").json()["in_memory"]["send"] > 0,
            timeout=30,
            what="emails claimed into the send pipe, waiting at the held gate",
        )
        assert len(fake.messages()) == accepted_while_stopped
        assert counts_of(client, COMPLAINT_TOPIC)["Sent"] < 800
        assert counts_of(client, BEHIND_TOPIC).get("Sent", 0) < 300

        # The dashboard says so, with the way out.
        require_browser()
        with launch_chromium() as browser:
            page = open_dashboard(browser, restarted)
            expect(page.locator("#sending-state")).to_have_text("Held", timeout=WAIT)
            expect(page.locator("#sending-detail")).to_contain_text("GUARD_COMPLAINT_RATE")
            expect(page.locator("#service-pill-text")).to_have_text("Ready · sending held")
            expect(page.get_by_role("button", name="Resume sending")).to_be_visible()

        # An operator resumes with the CLI; the queue drains; nothing was failed by the guard.
        resumed = subprocess.run(
            [*console_script(), "resume"],
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("SESENDER_")},
                "SESENDER_URL": restarted.url,
                "API_KEY": API_KEY,
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (resumed.returncode, resumed.stdout.strip()) == (0, "sending resumed"), resumed
        complaint_counts = wait_topic(client, COMPLAINT_TOPIC, count=800, timeout=60)
        behind = wait_topic(client, BEHIND_TOPIC, count=300, timeout=60)
        assert total(complaint_counts) == complaint_counts["Sent"] == 800
        assert total(behind) == behind["Sent"] == 300
        assert ready(client)["sending_held"] is False
        assert restarted.find("sending_resumed") is not None


def test_resuming_the_held_topic_requeues_its_emails(
    deployment: Deployment, feeder: Feeder
) -> None:
    with api(deployment.service) as client:
        before = counts_of(client, BAD_TOPIC)
        assert before["Held"] >= 1500
        # The body route names any topic, the default one ("") included; it is not held.
        default = client.post("/v1/reputation/resume-topic", json={"topic_id": ""})
        assert default.json() == {"status": "ok", "held": False, "resumed": 0}
        refused = client.post("/v1/reputation/resume-topic", json={"topic_id": 7})
        assert refused.status_code == 400
        response = client.post(f"/v1/topics/{BAD_TOPIC}/resume")
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "ok", "held": True, "resumed": before["Held"]}
        assert BAD_TOPIC not in ready(client)["held_topics"]
        # The released emails go out again (their bounces would hold the topic again later).
        wait_topic(client, BAD_TOPIC, count=before["Sent"] + 50, timeout=60)
        cancelled = client.delete(f"/v1/topics/{BAD_TOPIC}")
        assert cancelled.status_code == 200
        after = wait_for(
            lambda: (
                (counts := counts_of(client, BAD_TOPIC))
                and counts["Created"] + counts["Processed"] == 0
                and counts
            ),
            timeout=30,
            what="the cancelled topic settled",
        )
        assert total(after) == 2000
        assert after["Failed"] == 0
        assert after["Stopped"] + after["Held"] + after["Sent"] == 2000
        again = client.post(f"/v1/topics/{BAD_TOPIC}/resume").json()
        if again["held"]:  # held again before the cancel: its held emails were stopped
            assert again["resumed"] == 0


def counts_of(client: httpx.Client, topic: str) -> dict[str, int]:
    response = client.get(f"/v1/topics/{topic}")
    assert response.status_code == 200, response.text
    counts: dict[str, int] = response.json()["request_counts"]
    return counts


def total_sent(client: httpx.Client) -> int:
    return sum(
        counts_of(client, topic).get("Sent", 0)
        for topic in (BAD_TOPIC, GOOD_TOPIC, COMPLAINT_TOPIC, BEHIND_TOPIC)
    )


def test_the_account_monitor_follows_get_account(
    fake: FakeSes, tmp_path: Path, minter: SnsMinter
) -> None:
    """``GetAccount`` read every half second here: ``SendingEnabled: false`` pauses sending until
    SES says it can send again; with ``CAP_TO_ACCOUNT_RATE`` the send rate follows a lowered and
    a raised ``MaxSendRate``. (Its own service: pausing the account must not touch the others.)"""
    env = base_env(
        tmp_path,
        **fake.service_env(
            API_KEY=API_KEY,
            MAX_SEND_PER_SECOND="100",
            CAP_TO_ACCOUNT_RATE="true",
            ACCOUNT_POLL_SECONDS="0.5",
            PAUSE_PROBE_SECONDS="0.5",
        ),
    )
    monitored = ServiceProcess(tmp_path, env).start()
    try:
        with api(monitored) as client:

            def rate() -> float:
                body = client.get("/v1/stats/send-rate").json()
                return float(body["configured_per_second"])

            assert rate() == 100
            post_fake(fake, "/_bench/account", {"SendQuota": {"MaxSendRate": 14}})
            wait_for(lambda: rate() == 14, timeout=20, what="the rate capped at 14")
            post_fake(fake, "/_bench/account", {"SendQuota": {"MaxSendRate": 40}})
            wait_for(lambda: rate() == 40, timeout=20, what="the rate raised to 40")
            post_fake(fake, "/_bench/account", {"SendingEnabled": False})
            state = wait_for(
                lambda: (body := ready(client))["sending"] == "paused" and body,
                timeout=20,
                what="sending paused by GetAccount",
            )
            assert "sending is disabled" in state["sending_paused_reason"]
            assert state["sending_held"] is False  # the provider's pause, not the guard's
            post_fake(fake, "/_bench/account/reset", {})
            wait_for(
                lambda: ready(client)["sending"] == "active",
                timeout=20,
                what="sending resumed once SES allows it",
            )
            assert rate() == 100
        assert monitored.stop() == 0
    finally:
        monitored.kill()
        post_fake(fake, "/_bench/account/reset", {})


def post_fake(fake: FakeSes, path: str, body: dict[str, Any]) -> None:
    response = httpx.post(f"{fake.url}{path}", json=body, timeout=5)
    assert response.status_code == 200, response.text


def test_an_account_wide_bounce_run_holds_all_sending_until_resumed(
    tmp_path: Path, minter: SnsMinter
) -> None:
    """Bounces spread over topics too small for the per-topic guard (under its 200 sends) still
    reach ``GUARD_BOUNCE_RATE`` account-wide: all sending is held, with the reason; nothing is
    failed; an operator's resume lets the queue move again. (Its own service and fake SES, with
    ``GUARD_MIN_SENDS=300`` so the test stays short.)"""
    topics = [f"guard-spread-{n}" for n in range(8)]
    with running_fake_ses() as own_fake:
        env = base_env(
            tmp_path,
            **own_fake.service_env(
                API_KEY=API_KEY,
                SNS_CERT_URL_PATTERN=LOOPBACK_PATTERN,
                MAX_SEND_PER_SECOND="100",
                GUARD_CHECK_SECONDS="0.5",
                GUARD_MIN_SENDS="300",
            ),
        )
        service = ServiceProcess(tmp_path, env).start()
        try:
            with Feeder(own_fake, service.url, minter) as own_feeder, api(service) as client:
                for topic in topics:  # 150 emails each, every tenth a permanent bounce
                    submit(
                        client,
                        topic=topic,
                        emails=[
                            f"{'bounce' if i % 10 == 0 else 'reader'}-{i}@{topic}.example"
                            for i in range(150)
                        ],
                    )
                state = wait_for(
                    lambda: (body := ready(client))["sending_held"] and body,
                    timeout=60,
                    what="sending held by the guard's account-wide bounce rate",
                )
                assert state["sending"] == "paused"
                assert "GUARD_BOUNCE_RATE" in state["sending_held_reason"]
                assert metric(client, "sesender_sending_held") == 1
                assert metric(client, "sesender_guard_bounce_rate") >= 0.04
                assert own_feeder.posted["bounce"] > 0
                counts = {topic: counts_of(client, topic) for topic in topics}
                held_sent = sum(c.get("Sent", 0) for c in counts.values())
                assert 300 <= held_sent < 1200 - 200  # held early: most emails still queued
                # No topic reached the per-topic minimum: this is the account-wide hold.
                assert all(total(c) == 150 and c.get("Sent", 0) < 200 for c in counts.values())
                assert not any(c.get("Failed") or c.get("Held") for c in counts.values())

                resumed = client.post("/v1/sending/resume")
                assert resumed.status_code == 200, resumed.text
                wait_for(
                    lambda: (
                        sum(counts_of(client, t).get("Sent", 0) for t in topics) >= held_sent + 100
                    ),
                    timeout=60,
                    what="sending going on after the operator's resume",
                )
                assert service.find("sending_resumed") is not None
                final = [counts_of(client, topic) for topic in topics]
                assert not any(c.get("Failed") for c in final)
                assert sum(total(c) for c in final) == 1200  # nothing lost
            assert own_feeder.errors == []
            assert service.stop() == 0
        finally:
            service.kill()
