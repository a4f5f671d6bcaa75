"""Schemathesis against the real process: the service keeps the promises of its OpenAPI document.

The service runs as a process with the memory backend; schemathesis loads the description from
the service's own ``/openapi.json`` and runs its CLI (every phase: the documented examples,
coverage of boundary and invalid values, random fuzzing, and stateful sequences that follow the
document's links), with ``X-API-KEY`` set. ``scripts/fuzz`` runs schemathesis with many more
cases; it needs :data:`SCHEMATHESIS_CONFIG` as well (and no ``--checks all``), or it reports the
failures that configuration explains.

Checks: every check schemathesis has (the default when ``--checks`` is not given), except those
:data:`SCHEMATHESIS_CONFIG` turns off because they do not fit this API by design, each with its
reason there. So no 5xx, every status, content type, header and body as documented, 405 with
``Allow`` for undocumented methods, 401 without (or with a wrong) key, and valid requests
accepted. For the SNS webhook that means: whatever the body and headers, 400 or 403, never a 5xx
(schemathesis cannot sign a message, and a random ``Timestamp`` is practically never fresh, so no
request reaches the certificate download).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.harness import ServiceProcess

pytestmark = pytest.mark.e2e

#: Per operation and phase; with 41 operations this gives about 2,400 cases.
MAX_EXAMPLES = 30
MINIMUM_CASES = 200
SEED = 20240101

#: The schemathesis configuration (``schemathesis.toml`` syntax) of the run. The checks it turns
#: off, globally or for one operation, do not fit this API by design:
SCHEMATHESIS_CONFIG = """
# negative_data_rejection expects schema-violating input to be refused. The API is lenient where
# the specification says so: an invalid address (even a non-string) is counted in `errors` and
# listed in `rejected` while the valid ones are accepted, a topic id in a path is free text of any
# length, and the suppression search takes any printable text while its pattern spells the ASCII
# part. Such requests rightly answer 200.
# use_after_free expects a resource to be gone after DELETE. DELETE /v1/topics/{id} cancels the
# topic's pending emails; its statistics stay readable, by design.
[checks]
negative_data_rejection.enabled = false
use_after_free.enabled = false

# The SNS webhook. positive_data_acceptance expects a schema-valid request to answer 2xx, but a
# schema-valid SNS message is only well formed: its signature cannot be valid (403), and the
# x-amz-sns-message-type header must equal the body's Type, which OpenAPI cannot express (400).
# not_a_server_error and status_code_conformance still hold it to 400/403 and never a 5xx. For
# the same reason schemathesis warns that it only got 403s ("Authentication failed", which here
# is not about the API key: hidden) and that the data was mostly refused ("Schema validation
# mismatch": schemathesis 4.32 reads that one from the global settings only, so it stays).
[[operations]]
include-operation-id = "snsEvents"
checks.positive_data_acceptance.enabled = false
warnings.display = ["missing_test_data", "unsupported_regex", "unresolvable_reference"]

# POST /v1/topics/{topic_id}/retry. The topic id is the rest of the path, so GET and DELETE on
# /v1/topics/x/retry are the statistics and the cancellation of the topic "x/retry" (200), not
# 405, and OPTIONS lists their methods in Allow: unsupported_method and allow_header_conformance
# cannot apply. A topic id that is empty (from a link: the topic of emails sent without one) or
# "." becomes /v1/topics/retry once the URL is normalised, the URL of the topic "retry", which has
# no POST: the documented 405, accepted here for valid-looking data as well.
[[operations]]
include-operation-id = "retryTopic"
checks.unsupported_method.enabled = false
checks.allow_header_conformance.enabled = false
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "404", "405", "503"]

# POST /v1/messages. A message's `from` is any one address in the schema, but it is accepted only
# when its address or domain is on ALLOWED_SENDERS (400 otherwise, nothing stored), which OpenAPI
# cannot express; a `reply_to` must be one address (the email-validator's rules, as for
# recipients). tests/e2e/test_api_keys.py checks both ways on purpose.
[[operations]]
include-operation-id = "submitMessages"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "409", "503"]

# POST /v1/api-keys. A key's senders must be addresses or domains on ALLOWED_SENDERS and its name
# printable, rules OpenAPI cannot express (400 otherwise); tests/e2e/test_api_keys.py and
# tests/unit/http/test_scopes.py check them.
[[operations]]
include-operation-id = "createApiKey"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "503"]

# POST /v1/topics/{topic_id}/resume: the same shape as retry, for the same reasons.
[[operations]]
include-operation-id = "resumeTopic"
checks.unsupported_method.enabled = false
checks.allow_header_conformance.enabled = false
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "404", "405", "503"]

# GET /v1/topics/{topic_id}/links, for the same reason: DELETE on /v1/topics/x/links is the
# cancellation of the topic "x/links", so OPTIONS lists DELETE in Allow.
[[operations]]
include-operation-id = "getTopicLinks"
checks.unsupported_method.enabled = false
checks.allow_header_conformance.enabled = false
# The default topic's id is "": its links path /v1/topics//links is /v1/topics/links once the
# slashes merge, which is GET /v1/topics/{topic_id} of the topic "links" (the routing rule above,
# docs/operations.md section 13). Schemathesis's stateful phase follows listTopics' "" there and
# validates the topic's answer against the links schema; tests/e2e/test_click_tracking.py checks
# the links answer of real topics.
checks.response_schema_conformance.enabled = false

# The webhook endpoints. A URL valid for the schema is refused (400) unless every address its host
# resolves to is public, which no schema expresses (and this machine resolves no public name).
# The service runs with WEBHOOK_DELIVERY_ENABLED=false: the public IP literals schemathesis makes
# up are accepted, and nothing may connect to them from a test.
[[operations]]
include-operation-id = "createWebhook"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "503"]
[[operations]]
include-operation-id = "updateWebhook"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "404", "503"]
"""


def schemathesis_command(
    url: str,
    api_key: str,
    config_file: Path,
    report_dir: Path,
    *,
    max_examples: int,
    seed: int | None,
) -> list[str]:
    # No --checks: all checks run by default, and an explicit `--checks all` would override the
    # per-operation settings of the configuration file.
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(config_file),
        "run",
        f"{url}/openapi.json",
        "--header",
        f"X-API-KEY: {api_key}",
        "--max-examples",
        str(max_examples),
        # One worker: on CPython 3.11 ast.parse is not safe in several threads at once (the
        # "AST constructor recursion depth mismatch" SystemError, python/cpython#106905), and
        # Hypothesis parses schemathesis' source to describe its filter lambdas, so with four
        # workers the coverage phase errored now and then. The service, not the generator, sets
        # the pace: one worker takes no longer.
        "--workers",
        "1",
        "--request-timeout",
        "5",
        "--no-color",
        "--report",
        "json",
        "--report-dir",
        str(report_dir),
    ]
    if seed is not None:
        command += ["--seed", str(seed)]
    return command


def test_the_service_conforms_to_its_openapi_document(
    start_service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    service = start_service(
        SENDER_BACKEND="memory", MAX_SEND_PER_SECOND="500", WEBHOOK_DELIVERY_ENABLED="false"
    )
    with httpx.Client(base_url=service.url, timeout=10) as client:
        document = client.get("/openapi.json").json()
    # Schemathesis leaves out the operation serving the document it was loaded from.
    operations = {
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters" and path != "/openapi.json"
    }

    config_file = tmp_path / "schemathesis.toml"
    config_file.write_text(SCHEMATHESIS_CONFIG, encoding="utf-8")
    report_dir = tmp_path / "schemathesis"
    result = subprocess.run(
        schemathesis_command(
            service.url,
            service.api_key,
            config_file,
            report_dir,
            max_examples=MAX_EXAMPLES,
            seed=SEED,
        ),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    (report_path,) = report_dir.glob("*.json")
    report: dict[str, Any] = json.loads(report_path.read_text())

    assert result.returncode == 0, output
    assert report["exit_code"] == 0, output
    assert report["complete"] is True
    assert report["failures"] == [], output
    assert report["errors"] == [], output
    cases = report["test_cases"]
    assert cases["with_failures"] == 0
    assert cases["errored"] == 0
    assert cases["generated"] >= MINIMUM_CASES, cases
    # Every documented operation was exercised, and the document covers the whole API (the
    # unit test tests/unit/http/test_openapi.py checks it against the app's routes).
    assert report["operations"]["tested"] == report["operations"]["total"] == len(operations)
    assert set(report["valid_rates"]) == operations
    for phase in ("examples", "coverage", "fuzzing", "stateful"):
        assert report["phases"][phase]["status"] == "success", (phase, report["phases"])
    # The process survived all of it and still answers.
    with service.client() as client:
        assert client.get("/ready").status_code == 200
    assert service.process is not None
    assert service.process.poll() is None
