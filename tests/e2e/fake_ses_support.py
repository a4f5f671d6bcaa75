"""``bench.fake_ses`` (or ``bench.soak_fake_ses``) as a child process, for end-to-end tests.

Unlike moto, the fake answers ``SendBulkEmail``: tests that must hold in both
``SES_SEND_MODE``s run the bulk mode against it. With ``--record`` it keeps every message as SES
would render it, read back over HTTP (``/_bench/messages``): the service is another process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sesender.feedback.ses_events import REQUEST_ID_TAG

REPO_DIR = Path(__file__).resolve().parents[2]
SENDER = "news@example.com"


@dataclass
class FakeSes:
    url: str

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as reply:
            return json.load(reply)

    def post(self, path: str) -> Any:
        request = urllib.request.Request(f"{self.url}{path}", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=5) as reply:
            return json.load(reply)

    def messages(self) -> list[dict[str, Any]]:
        """Every message the fake accepted, as SES would render it (needs ``--record``)."""
        messages: list[dict[str, Any]] = self.get("/_bench/messages")
        return messages

    def count_to(self) -> Counter[str]:
        """How many messages the fake accepted for each ``To`` address (needs ``--record``)."""
        return Counter(message["to"] for message in self.messages())

    def count_by_request(self) -> Counter[int]:
        """How many messages the fake accepted for each request id (its ``EmailTags``)."""
        return Counter(
            int(tag["Value"])
            for message in self.messages()
            for tag in message["tags"]
            if tag["Name"] == REQUEST_ID_TAG
        )

    def service_env(self, **overrides: str) -> dict[str, str]:
        """The service settings that send through this fake in bulk mode."""
        env = {
            "SENDER_BACKEND": "ses",
            "SES_SEND_MODE": "bulk",
            "AWS_ENDPOINT_URL_SESV2": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_SES_FROM_EMAIL": SENDER,
            "MAX_SEND_PER_SECOND": "100",
            # Never fetched: the SES backend refuses a loopback SERVER_URL.
            "SERVER_URL": "https://sesender.example.test",
        }
        env.update(overrides)
        return env


@contextmanager
def running_fake_ses(*options: str, module: str = "bench.fake_ses") -> Iterator[FakeSes]:
    """A fake SES (``module``) as a child process on a free loopback port; stopped after.
    ``bench.fake_ses`` keeps every message (``--record``)."""
    if module == "bench.fake_ses":
        options = ("--record", *options)
    process = subprocess.Popen(
        [sys.executable, "-m", module, "--port", "0", *options],
        cwd=REPO_DIR,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("PORT "), line
        yield FakeSes(f"http://127.0.0.1:{int(line.split()[1])}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
