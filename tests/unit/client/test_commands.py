"""The client commands against an in-memory fake of the API (``httpx.MockTransport``)."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from sesender.cli import build_parser
from sesender.client.api import TopicStats
from sesender.client.commands import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    IDEMPOTENCY_WINDOW_HOURS,
    RateMeter,
    Runtime,
    final_line,
    idempotency_key,
    run_client_command,
)
from sesender.http.submission import IDEMPOTENCY_WINDOW

ENVIRON = {"SESENDER_URL": "http://fake.test", "API_KEY": "secret"}


@dataclass
class FakeSesender:
    """Accepts addresses containing ``@``; the topic finishes ``per_poll`` emails per poll."""

    per_poll: int = 10_000
    fail_post: dict[int, httpx.Response | BaseException] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    posts: list[dict[str, Any]] = field(default_factory=list)
    stored: int = 0
    sent: int = 0
    suppressed: dict[str, str] = field(default_factory=dict)
    #: Idempotency-Key -> (body, response body) of the submissions stored, as the server keeps.
    answered: dict[str, tuple[Any, dict[str, Any]]] = field(default_factory=dict)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("X-API-KEY") != "secret":
            return httpx.Response(401, json={"error": "Invalid API Key"})
        path = request.url.path
        if request.method == "POST" and path == "/v1/messages":
            return self.submit(request)
        if path.startswith("/v1/topics/") and request.method == "GET":
            self.sent = min(self.stored, self.sent + self.per_poll)
            if not self.stored:
                return httpx.Response(200, json={"request_counts": {}, "result_counts": {}})
            counts = {"Created": self.stored - self.sent, "Processed": 0, "Sent": self.sent}
            counts |= {"Failed": 0, "Stopped": 0, "Suppressed": 0}
            results = {"Delivery": 0, "Open": 0, "Bounce": 2, "Complaint": 1}
            return httpx.Response(200, json={"request_counts": counts, "result_counts": results})
        if path.startswith("/v1/suppressions"):
            return self.suppressions(request)
        return httpx.Response(404, json={"error": "Not found"})

    def submit(self, request: httpx.Request) -> httpx.Response:
        attempt = len(self.posts)
        body = json.loads(request.content)
        self.posts.append({"body": body, "key": request.headers.get("Idempotency-Key")})
        failure = self.fail_post.pop(attempt, None)
        if isinstance(failure, BaseException):
            raise failure
        if failure is not None:
            return failure
        key = request.headers.get("Idempotency-Key")
        if key in self.answered:
            earlier_body, earlier_answer = self.answered[key]
            if earlier_body != body:
                return httpx.Response(
                    409, json={"error": "Idempotency-Key was already used with a different body"}
                )
            return httpx.Response(200, json=earlier_answer, headers={"Idempotent-Replayed": "true"})
        emails = [e if isinstance(e, str) else e["email"] for e in body["messages"][0]["emails"]]
        good = [e for e in emails if "@" in e]
        bad = [e for e in emails if "@" not in e]
        scheduled = bool(body.get("scheduled_at", "").startswith("2999"))
        self.stored += len(good)
        answer = {
            "total": len(emails),
            "success": len(good),
            "errors": len(bad),
            "duplicates": 0,
            "scheduled": scheduled,
            "rejected": [{"email": e, "reason": "no @-sign"} for e in bad],
        }
        if key is not None:
            self.answered[key] = (body, answer)
        return httpx.Response(200, json=answer)

    def suppressions(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            limit = int(request.url.params["limit"])
            after = request.url.params.get("after", "")
            needle = request.url.params.get("email", "")
            page = sorted(e for e in self.suppressed if e > after and needle in e)[:limit]
            entries = [
                {"email": e, "reason": self.suppressed[e], "source": "api", "created_at": "t0"}
                for e in page
            ]
            following = page[-1] if len(page) == limit else None
            return httpx.Response(200, json={"suppressions": entries, "next": following})
        email = request.url.path.rsplit("/", 1)[1]
        if request.method == "PUT":
            reason = json.loads(request.content)["reason"] if request.content else "manual"
            self.suppressed[email] = reason
            return httpx.Response(200, json={"email": email, "reason": reason, "source": "api"})
        if email not in self.suppressed:
            return httpx.Response(404, json={"error": f"{email} is not suppressed"})
        del self.suppressed[email]
        return httpx.Response(200, json={"status": "ok", "email": email})

    @property
    def topic_polls(self) -> int:
        return sum(1 for r in self.requests if r.url.path.startswith("/v1/topics/"))


@dataclass
class Run:
    code: int
    out: str
    err: str
    sleeps: list[float]

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


@pytest.fixture
def fake() -> FakeSesender:
    return FakeSesender()


def run(
    fake: FakeSesender,
    argv: Sequence[str],
    *,
    environ: dict[str, str] | None = None,
    terminal: bool = False,
) -> Run:
    out, err = io.StringIO(), io.StringIO()
    sleeps: list[float] = []
    ticks = iter(range(10**6))
    runtime = Runtime(
        console=Console(file=out, force_terminal=terminal, width=120, highlight=False),
        errors=err,
        sleep=sleeps.append,
        clock=lambda: float(next(ticks)),
        retry_delays=(0.5, 1.5),
    )
    arguments = build_parser().parse_args(argv)
    code = run_client_command(
        arguments,
        ENVIRON if environ is None else environ,
        runtime=runtime,
        transport=httpx.MockTransport(fake),
    )
    return Run(code, out.getvalue(), err.getvalue(), sleeps)


@pytest.fixture
def html(tmp_path: Path) -> Path:
    path = tmp_path / "mail.html"
    path.write_text("<h1>Héllo</h1>", encoding="utf-8")
    return path


def recipients_file(tmp_path: Path, count: int, *, invalid: int = 0) -> Path:
    path = tmp_path / "list.csv"
    lines = ["name,email"] + [f"U{i},user{i}@example.com" for i in range(count)]
    lines += [f"Bad{i},bad-address-{i}" for i in range(invalid)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def send_argv(html: Path, *extra: str) -> list[str]:
    return ["send", "--topic", "news", "--subject", "Hi", "--html", str(html), *extra]


# -- send -----------------------------------------------------------------------------------------


def test_send_splits_25001_recipients_into_three_requests_and_follows(
    fake: FakeSesender, html: Path, tmp_path: Path
) -> None:
    fake.per_poll = 10_000
    path = recipients_file(tmp_path, 24_998, invalid=3)
    result = run(fake, send_argv(html, "--recipients", str(path), "--interval", "0.25"))
    assert result.code == EXIT_OK, result.err
    assert result.err == ""
    sizes = [len(post["body"]["messages"][0]["emails"]) for post in fake.posts]
    assert sizes == [10_000, 10_000, 5_001]
    assert {post["body"]["messages"][0]["content"] for post in fake.posts} == {"<h1>Héllo</h1>"}
    keys = [post["key"] for post in fake.posts]
    assert len(set(keys)) == 3
    assert all(key.startswith("sesender-cli-") for key in keys)
    assert result.lines[0] == (
        "topic news: submitted 25001 recipients in 3 requests:"
        " 24998 accepted, 3 rejected, 0 duplicates"
    )
    assert "  bad-address-0: no @-sign" in result.lines
    assert fake.topic_polls == 3  # 10,000 then 20,000 then all 24,998 sent
    assert result.sleeps == [0.25, 0.25]
    assert result.lines[-1] == (
        "topic news: 24998 sent, 0 failed, 0 stopped, 0 suppressed, 2 bounced, 1 complaints"
    )


def test_send_to_addresses_drops_repeats_and_uses_the_environment(
    fake: FakeSesender, html: Path
) -> None:
    result = run(
        fake, send_argv(html, "--to", "a@example.com", "A@example.com", "--to", "b@example.com")
    )
    assert result.code == EXIT_OK, result.err
    assert fake.posts[0]["body"]["messages"][0]["emails"] == ["a@example.com", "b@example.com"]
    assert all(r.url.host == "fake.test" for r in fake.requests)
    assert result.lines[0] == (
        "topic news: submitted 3 recipients in 1 request: 2 accepted, 0 rejected, 1 duplicates"
    )


def test_send_options_win_over_the_environment(fake: FakeSesender, html: Path) -> None:
    argv = send_argv(html, "--to", "a@example.com", "--url", "http://other.test/", "--no-follow")
    result = run(fake, [*argv, "--api-key", "secret"], environ={"API_KEY": "stale"})
    assert result.code == EXIT_OK, result.err
    assert [r.url.host for r in fake.requests] == ["other.test"]


def test_send_no_follow_and_scheduled_do_not_poll(fake: FakeSesender, html: Path) -> None:
    no_follow = run(fake, send_argv(html, "--to", "a@example.com", "--no-follow"))
    assert no_follow.code == EXIT_OK
    scheduled = run(fake, send_argv(html, "--to", "a@example.com", "--at", "2999-01-01 09:00:00"))
    assert scheduled.code == EXIT_OK
    assert fake.posts[1]["body"]["scheduled_at"] == "2999-01-01 09:00:00"
    assert "scheduled for 2999-01-01 09:00:00" in scheduled.lines[-1]
    assert fake.topic_polls == 0


def test_send_past_schedule_in_iso_form_is_followed(fake: FakeSesender, html: Path) -> None:
    result = run(fake, send_argv(html, "--to", "a@example.com", "--at", "2020-01-01T09:00+09:00"))
    assert result.code == EXIT_OK, result.err
    assert fake.posts[0]["body"]["scheduled_at"] == "2020-01-01T09:00+09:00"
    assert fake.topic_polls == 1


def test_send_when_nothing_is_accepted_does_not_follow(fake: FakeSesender, html: Path) -> None:
    result = run(fake, send_argv(html, "--to", "nope"))
    assert result.code == EXIT_OK
    assert result.lines[-1] == "topic news: no address was accepted; nothing to follow"
    assert fake.topic_polls == 0


def test_send_repeats_a_request_whose_outcome_is_unknown_with_the_same_key(
    fake: FakeSesender, html: Path
) -> None:
    fake.fail_post = {
        0: httpx.ReadTimeout("timed out"),
        1: httpx.Response(503, json={"error": "Storage unavailable"}),
    }
    result = run(fake, send_argv(html, "--to", "a@example.com", "--no-follow"))
    assert result.code == EXIT_OK, result.err
    assert len(fake.posts) == 3
    assert len({post["key"] for post in fake.posts}) == 1
    assert result.sleeps == [0.5, 1.5]


def test_send_gives_up_after_the_retries(fake: FakeSesender, html: Path) -> None:
    fake.fail_post = {n: httpx.ReadTimeout("timed out") for n in range(3)}
    result = run(fake, send_argv(html, "--to", "a@example.com"))
    assert result.code == EXIT_FAILED
    assert (
        result.err == "sesender: sesender at http://fake.test did not answer in time (timed out)\n"
    )


def test_send_failing_midway_says_what_was_already_accepted(
    fake: FakeSesender, html: Path, tmp_path: Path
) -> None:
    fake.fail_post = {1: httpx.Response(400, json={"error": "messages[0].subject is bad"})}
    path = recipients_file(tmp_path, 25)
    result = run(fake, send_argv(html, "--recipients", str(path), "--batch-size", "10"))
    assert result.code == EXIT_FAILED
    assert result.err == (
        "sesender: request 2 of 3 failed; 10 of 25 recipients were already accepted for topic"
        " news: messages[0].subject is bad (HTTP 400)\n"
    )
    assert result.out == ""


def test_send_wrong_key_is_one_line(fake: FakeSesender, html: Path) -> None:
    result = run(fake, [*send_argv(html, "--to", "a@example.com"), "--api-key", "wrong"])
    assert result.code == EXIT_FAILED
    assert result.err == "sesender: the server refused the API key (Invalid API Key)\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--to", "a@b.c", "--at", "tomorrow"], "--at 'tomorrow' is not 'YYYY-MM-DD HH:MM:SS'"),
        (["--recipients", "/nonexistent/list.csv"], "/nonexistent/list.csv does not exist"),
        (["--to", " "], "--to has no addresses"),
    ],
)
def test_send_input_errors_exit_2_before_any_request(
    fake: FakeSesender, html: Path, extra: list[str], message: str
) -> None:
    result = run(fake, send_argv(html, *extra))
    assert result.code == EXIT_USAGE
    assert message in result.err
    assert result.err.count("\n") == 1
    assert result.err.startswith("sesender: ")
    assert fake.requests == []


def test_send_html_file_problems(fake: FakeSesender, tmp_path: Path) -> None:
    empty = tmp_path / "empty.html"
    empty.write_text("  \n", encoding="utf-8")
    result = run(fake, send_argv(empty, "--to", "a@b.c"))
    assert (result.code, result.err) == (EXIT_USAGE, f"sesender: HTML file {empty} is empty\n")
    latin = tmp_path / "latin.html"
    latin.write_bytes("<p>é</p>".encode("latin-1"))
    result = run(fake, send_argv(latin, "--to", "a@b.c"))
    assert result.code == EXIT_USAGE
    assert "is not UTF-8 text" in result.err


def test_missing_api_key_is_a_usage_error(fake: FakeSesender, html: Path) -> None:
    result = run(fake, send_argv(html, "--to", "a@b.c"), environ={})
    assert result.code == EXIT_USAGE
    assert result.err == "sesender: no API key: pass --api-key or set API_KEY\n"


def test_an_invalid_url_is_a_usage_error(fake: FakeSesender) -> None:
    result = run(fake, ["stats", "t", "--url", "localhost:3000"])
    assert result.code == EXIT_USAGE
    assert result.err == (
        "sesender: invalid sesender URL 'localhost:3000': give it as http://host:port or"
        " https://host\n"
    )


def test_send_on_a_terminal_shows_live_progress_and_ends_with_plain_lines(
    fake: FakeSesender, html: Path, tmp_path: Path
) -> None:
    fake.per_poll = 40
    path = recipients_file(tmp_path, 100)
    result = run(fake, send_argv(html, "--recipients", str(path)), terminal=True)
    assert result.code == EXIT_OK, result.err
    assert "submitting" in result.out
    assert "100/100 done" in result.out
    assert result.out.rstrip().endswith(
        "topic news: 100 sent, 0 failed, 0 stopped, 0 suppressed, 2 bounced, 1 complaints"
    )


def test_a_rerun_resumes_and_resend_sends_again(
    fake: FakeSesender, html: Path, tmp_path: Path
) -> None:
    path = recipients_file(tmp_path, 25)
    argv = send_argv(html, "--recipients", str(path), "--batch-size", "10", "--no-follow")
    first = run(fake, argv)
    assert first.code == EXIT_OK, first.err
    assert fake.stored == 25
    assert first.lines == [
        "topic news: submitted 25 recipients in 3 requests: 25 accepted, 0 rejected, 0 duplicates"
    ]
    first_keys = [post["key"] for post in fake.posts]

    again = run(fake, argv)
    assert again.code == EXIT_OK, again.err
    assert fake.stored == 25  # nothing stored twice
    assert [post["key"] for post in fake.posts[3:]] == first_keys
    assert again.lines == [
        "topic news: submitted 25 recipients in 3 requests: 25 accepted, 0 rejected, 0 duplicates",
        "topic news: 3 of 3 requests had been accepted by an earlier run (replayed, not sent"
        " again); 0 newly accepted",
    ]

    resent = run(fake, [*argv, "--resend"])
    assert resent.code == EXIT_OK, resent.err
    assert fake.stored == 50
    resent_keys = [post["key"] for post in fake.posts[6:]]
    assert len(set(resent_keys)) == 3
    assert not set(resent_keys) & set(first_keys)
    assert len(resent.lines) == 1
    run(fake, [*argv, "--resend"])
    assert fake.stored == 75  # each --resend is a new submission


def test_a_rerun_after_a_failure_midway_sends_only_the_rest(
    fake: FakeSesender, html: Path, tmp_path: Path
) -> None:
    fake.fail_post = {2: httpx.Response(400, json={"error": "messages[0].subject is bad"})}
    path = recipients_file(tmp_path, 25)
    argv = send_argv(html, "--recipients", str(path), "--batch-size", "10", "--no-follow")
    failed = run(fake, argv)
    assert failed.code == EXIT_FAILED
    assert fake.stored == 20
    resumed = run(fake, argv)
    assert resumed.code == EXIT_OK, resumed.err
    assert fake.stored == 25
    assert resumed.lines[-1] == (
        "topic news: 2 of 3 requests had been accepted by an earlier run (replayed, not sent"
        " again); 1 newly accepted"
    )


def test_ctrl_c_while_submitting_says_how_to_resume(
    fake: FakeSesender, html: Path, tmp_path: Path
) -> None:
    fake.fail_post = {1: KeyboardInterrupt()}
    path = recipients_file(tmp_path, 25)
    argv = send_argv(html, "--recipients", str(path), "--batch-size", "10")
    interrupted = run(fake, argv)
    assert interrupted.code == EXIT_INTERRUPTED
    assert interrupted.err == (
        "sesender: interrupted while submitting topic news; run the same command again to resume"
        " (what was already accepted is not sent twice)\n"
    )
    assert fake.stored == 10
    resumed = run(fake, [*argv, "--no-follow"])
    assert resumed.code == EXIT_OK, resumed.err
    assert fake.stored == 25


def test_idempotency_keys_change_with_every_input_and_fit_the_header_limit() -> None:
    base: dict[str, Any] = {
        "topic": "news",
        "subject": "Hi",
        "content": "<p>x</p>",
        "emails": ("a@example.com", "b@example.com"),
        "scheduled_at": None,
        "index": 0,
    }
    key = idempotency_key(**base)
    assert key == idempotency_key(**base)
    assert key.startswith("sesender-cli-v1-")
    assert len(key) <= 255
    assert key.isprintable()
    changes: list[dict[str, Any]] = [
        {"topic": "news2"},
        {"subject": "Hi!"},
        {"content": "<p>y</p>"},
        {"emails": ("a@example.com",)},
        {"emails": ("b@example.com", "a@example.com")},
        {"scheduled_at": "2999-01-01 09:00:00"},
        {"index": 1},
        {"salt": "random"},
        # the same characters split differently between fields
        {"topic": "new", "subject": "sHi"},
    ]
    keys = {idempotency_key(**(base | change)) for change in changes}
    assert len(keys) == len(changes)
    assert key not in keys


def test_the_help_states_the_servers_idempotency_window(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert IDEMPOTENCY_WINDOW.total_seconds() == IDEMPOTENCY_WINDOW_HOURS * 3600
    with pytest.raises(SystemExit):
        build_parser().parse_args(["send", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"record for {IDEMPOTENCY_WINDOW_HOURS} hours" in text
    assert "--resend" in text


def test_rate_meter_measures_over_a_window() -> None:
    meter = RateMeter(window=5.0)
    assert meter.add(0.0, 0) == 0.0
    assert meter.add(1.0, 100) == 100.0
    assert meter.add(2.0, 300) == 150.0
    for second in range(3, 11):
        rate = meter.add(float(second), 300 + (second - 2) * 10)
    assert rate == pytest.approx(10.0)


# -- stats, cancel, retry, suppressions -----------------------------------------------------------


def test_stats_table_json_and_unknown_topic(fake: FakeSesender, html: Path) -> None:
    unknown = run(fake, ["stats", "news"])
    assert unknown.lines == ["topic news: no emails"]
    run(fake, send_argv(html, "--to", "a@example.com", "--no-follow"))
    table = run(fake, ["stats", "news"])
    assert table.code == EXIT_OK
    assert "Sent" in table.out
    assert "Complaint" in table.out
    assert table.lines[-1] == "total 1, pending 0"
    raw = run(fake, ["stats", "news", "--json"])
    assert json.loads(raw.out)["request_counts"]["Sent"] == 1


def test_cancel_and_retry_print_their_counts() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            return httpx.Response(200, json={"status": "ok", "stopped": 12})
        return httpx.Response(200, json={"status": "ok", "requeued": 3})

    for argv, line in (
        (["cancel", "t"], "topic t: stopped 12"),
        (["retry", "t"], "topic t: requeued 3"),
    ):
        out, err = io.StringIO(), io.StringIO()
        code = run_client_command(
            build_parser().parse_args(argv),
            ENVIRON,
            runtime=Runtime(console=Console(file=out), errors=err),
            transport=httpx.MockTransport(handle),
        )
        assert (code, out.getvalue(), err.getvalue()) == (EXIT_OK, line + "\n", "")


def test_resume_lifts_the_sending_hold_or_a_topic_hold() -> None:
    seen: list[str] = []
    held = {"": True, "news/1": True, "sending": True}

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode()
        if path == "/v1/sending/resume":
            seen.append(f"{request.method} {path}")
            was_held, held["sending"] = held["sending"], False
            return httpx.Response(
                200, json={"status": "ok", "resumed": was_held, "sending": "active"}
            )
        topic = json.loads(request.content)["topic_id"]
        seen.append(f"{request.method} {path} {topic!r}")
        was_held, held[topic] = held[topic], False
        return httpx.Response(
            200, json={"status": "ok", "held": was_held, "resumed": 1740 if was_held else 0}
        )

    for argv, line in (
        (["resume"], "sending resumed"),
        (["resume"], "sending was not held by the reputation guard"),
        (["resume", "--topic", "news/1"], "topic news/1: resumed, 1740 held emails requeued"),
        (["resume", "--topic", "news/1"], "topic news/1: not held"),
        (["resume", "--topic", ""], 'topic "": resumed, 1740 held emails requeued'),
    ):
        out, err = io.StringIO(), io.StringIO()
        code = run_client_command(
            build_parser().parse_args(argv),
            ENVIRON,
            runtime=Runtime(console=Console(file=out), errors=err),
            transport=httpx.MockTransport(handle),
        )
        assert (code, out.getvalue(), err.getvalue()) == (EXIT_OK, line + "\n", "")
    assert seen == [
        "POST /v1/sending/resume",
        "POST /v1/sending/resume",
        "POST /v1/reputation/resume-topic 'news/1'",
        "POST /v1/reputation/resume-topic 'news/1'",
        "POST /v1/reputation/resume-topic ''",
    ]


def test_the_final_line_names_held_emails_only_when_there_are_some() -> None:
    plain = TopicStats(request_counts={"Sent": 3}, result_counts={"Bounce": 1})
    held = TopicStats(request_counts={"Sent": 260, "Held": 1740}, result_counts={"Bounce": 26})
    assert final_line("t", plain) == (
        "topic t: 3 sent, 0 failed, 0 stopped, 0 suppressed, 1 bounced, 0 complaints"
    )
    assert final_line("t", held).endswith(
        "26 bounced, 0 complaints; 1740 held by the reputation guard (sesender resume --topic ...)"
    )


def test_empty_topic_is_refused(fake: FakeSesender) -> None:
    result = run(fake, ["cancel", " "])
    assert (result.code, result.err) == (EXIT_USAGE, "sesender: the topic id must not be empty\n")


def test_suppressions_add_list_remove(fake: FakeSesender) -> None:
    assert run(fake, ["suppressions", "add", "x@example.com"]).lines == [
        "suppressed x@example.com (reason: manual)"
    ]
    for index in range(1_500):
        fake.suppressed[f"bulk{index:04}@example.org"] = "bounce"
    added = run(fake, ["suppressions", "add", "y@example.com", "--reason", "asked to"])
    assert added.lines == ["suppressed y@example.com (reason: asked to)"]
    listed = run(fake, ["suppressions", "list"])
    assert len(listed.lines) == 1_502
    assert listed.lines[-1] == "y@example.com\tasked to\tapi\tt0"
    filtered = run(fake, ["suppressions", "list", "--email", "example.com"])
    assert [line.split("\t")[0] for line in filtered.lines] == ["x@example.com", "y@example.com"]
    limited = run(fake, ["suppressions", "list", "--limit", "3"])
    assert len(limited.lines) == 3
    table = run(fake, ["suppressions", "list", "--email", "example.com"], terminal=True)
    assert "x@example.com" in table.out
    assert table.lines[-1] == "2 suppressed addresses"
    removed = run(fake, ["suppressions", "remove", "x@example.com"])
    assert removed.lines == ["removed x@example.com from the suppression list"]
    again = run(fake, ["suppressions", "remove", "x@example.com"])
    assert (again.code, again.err) == (
        EXIT_FAILED,
        "sesender: x@example.com is not suppressed (HTTP 404)\n",
    )


# -- parsing ---------------------------------------------------------------------------------------


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(argv)
    assert caught.value.code == EXIT_USAGE
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["send", "--topic", "t"], "sesender: send: the following arguments are required:"),
        (["send", "--topic", "t", "--subject", "s", "--html", "f", "--to", "a", "--x"], "--x"),
        (["send", "--to", "a", "--recipients", "f"], "not allowed with argument"),
        (["send", "--batch-size", "0"], "argument --batch-size: '0' must be at least 1"),
        (["send", "--interval", "nan"], "'nan' must be a positive number of seconds"),
        (["suppressions"], "sesender: suppressions: the following arguments are required"),
        (["suppressions", "list", "--limit", "x"], "'x' is not a whole number"),
        (["stats"], "(see 'sesender stats --help')"),
    ],
)
def test_client_usage_errors_are_one_line(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = usage_error(argv, capsys)
    assert expected in err
    assert err.count("\n") == 1
    assert err.startswith("sesender: ")


def test_serve_usage_errors_keep_argparse_behaviour(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(["serve", "--bogus"], capsys)
    assert err.startswith("usage: sesender")
    assert err.endswith("sesender: error: unrecognized arguments: --bogus\n")


# -- send with merge fields from CSV columns ------------------------------------------------------


def write_csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "people.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_send_turns_the_csv_columns_the_email_uses_into_recipient_data(
    fake: FakeSesender, tmp_path: Path
) -> None:
    html = tmp_path / "mail.html"
    html.write_text("<p>Hi {{ first_name }}, plan {{plan}}, {{email}}</p>", encoding="utf-8")
    path = write_csv(
        tmp_path,
        "first_name;Email;plan;notes\nAda;ada@example.com;pro;x\nBob;bob@example.com\n"
        "Ada again;ADA@example.com;free;y\n",
    )
    argv = ["send", "--topic", "news", "--subject", "Hello {{first_name}}", "--html", str(html)]
    result = run(fake, [*argv, "--recipients", str(path), "--no-follow"])
    assert result.code == EXIT_OK, result.err
    (post,) = fake.posts
    assert post["body"]["messages"][0]["emails"] == [
        {"email": "ada@example.com", "data": {"first_name": "Ada", "plan": "pro"}},
        {"email": "bob@example.com", "data": {"first_name": "Bob"}},  # short row: the server
    ]  # refuses it by the field's name
    assert "1 duplicates" in result.lines[0]
    # The key covers the data: other values are another submission, not a replay.
    path.write_text("first_name,email,plan\nAda,ada@example.com,free\n", encoding="utf-8")
    again = run(fake, [*argv, "--recipients", str(path), "--no-follow"])
    assert again.code == EXIT_OK, again.err
    assert fake.posts[1]["key"] != post["key"]


def test_send_with_columns_the_email_does_not_use_sends_plain_addresses(
    fake: FakeSesender, html: Path, tmp_path: Path
) -> None:
    path = write_csv(tmp_path, "name,email,First Name\nAda,ada@example.com,x\n")
    result = run(fake, send_argv(html, "--recipients", str(path), "--no-follow"))
    assert result.code == EXIT_OK, result.err
    assert fake.posts[0]["body"]["messages"][0]["emails"] == ["ada@example.com"]


@pytest.mark.parametrize(
    ("csv_text", "message"),
    [
        (
            "ada@example.com,Ada\n",
            "has several columns but no header row, and the subject or HTML uses merge fields"
            " ({{first_name}}, {{unsubscribe_url}}): add a first row naming the columns",
        ),
        (
            "email,name\nada@example.com,Ada\n",
            "the subject or HTML uses {{first_name}}, but recipients file",
        ),
        (
            "email,first_name,unsubscribe_url\nada@example.com,Ada,x\n",
            "has a column unsubscribe_url, but sesender provides {{unsubscribe_url}} itself",
        ),
    ],
)
def test_send_refuses_a_csv_that_cannot_fill_the_fields_before_any_request(
    fake: FakeSesender, tmp_path: Path, csv_text: str, message: str
) -> None:
    html = tmp_path / "mail.html"
    html.write_text("<p>Hi {{first_name}} <a href='{{unsubscribe_url}}'>x</a></p>", "utf-8")
    path = write_csv(tmp_path, csv_text)
    result = run(fake, send_argv(html, "--recipients", str(path)))
    assert result.code == EXIT_USAGE
    assert message in result.err
    assert result.err.count("\n") == 1
    assert fake.requests == []


def test_plain_keys_are_unchanged_by_merge_field_support() -> None:
    """A resumed plain send from before merge fields still finds its batches."""
    key = idempotency_key(
        topic="t", subject="s", content="c", emails=["a@example.com"], scheduled_at=None, index=0
    )
    assert key == (
        "sesender-cli-v1-"
        + __import__("hashlib")
        .sha256(
            b"".join(
                len(part).to_bytes(8, "big") + part
                for part in (b"", b"t", b"s", b"c", b"", b"0", b"a@example.com")
            )
        )
        .hexdigest()
    )


def test_send_with_a_header_but_no_column_for_a_field_is_a_usage_error(
    fake: FakeSesender, tmp_path: Path
) -> None:
    html = tmp_path / "mail.html"
    html.write_text("<p>Hi {{first_name}}</p>", encoding="utf-8")
    path = write_csv(tmp_path, "email\nada@example.com\n")
    result = run(fake, send_argv(html, "--recipients", str(path)))
    assert result.code == EXIT_USAGE
    assert "uses {{first_name}}, but recipients file" in result.err
    assert "(its columns: email)" in result.err
    assert fake.requests == []


def test_send_fills_provided_fields_from_a_one_column_csv_with_a_header(
    fake: FakeSesender, tmp_path: Path
) -> None:
    html = tmp_path / "mail.html"
    html.write_text("<p>Sent to {{ email }}</p>", encoding="utf-8")
    path = write_csv(tmp_path, "email\nada@example.com\n")
    result = run(fake, send_argv(html, "--recipients", str(path), "--no-follow"))
    assert result.code == EXIT_OK, result.err
    emails = fake.posts[0]["body"]["messages"][0]["emails"]
    assert emails == [{"email": "ada@example.com", "data": {}}]


def test_send_without_a_header_and_one_column_sends_the_content_as_given(
    fake: FakeSesender, tmp_path: Path
) -> None:
    html = tmp_path / "mail.html"
    html.write_text("<p>{{ literal }}</p>", encoding="utf-8")
    path = write_csv(tmp_path, "ada@example.com\nbob@example.com\n")
    result = run(fake, send_argv(html, "--recipients", str(path), "--no-follow"))
    assert result.code == EXIT_OK, result.err
    assert fake.posts[0]["body"]["messages"][0]["emails"] == ["ada@example.com", "bob@example.com"]
