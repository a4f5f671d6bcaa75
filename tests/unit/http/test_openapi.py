"""The OpenAPI description matches the app route for route, and is a valid OpenAPI 3.1 document."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate
from werkzeug.routing import Rule

from sesender.http.app import PUBLIC_ENDPOINTS, SesenderApp
from sesender.http.openapi import OPENAPI_DOCUMENT
from sesender.http.scopes import ROUTE_SCOPES, scope_names

ROOT = Path(__file__).resolve().parents[3]
PACKAGED = ROOT / "sesender" / "http" / "openapi.json"
DOCS_COPY = ROOT / "docs" / "openapi.json"
#: Methods Werkzeug adds on its own to every rule (HEAD to GET rules, OPTIONS to all).
AUTOMATIC_METHODS = {"HEAD", "OPTIONS"}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(OPENAPI_DOCUMENT)
    return loaded


def openapi_path(rule: Rule) -> str:
    """``/v1/topics/<path:topic_id>`` -> ``/v1/topics/{topic_id}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)


def app_operations(app: SesenderApp) -> dict[tuple[str, str], str]:
    """(path, method) -> endpoint for every rule of the app except Quart's static files."""
    operations: dict[tuple[str, str], str] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in sorted((rule.methods or set()) - AUTOMATIC_METHODS):
            operations[(openapi_path(rule), method.lower())] = rule.endpoint
    return operations


def described_operations() -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (path, method): operation
        for path, item in document()["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


def test_the_served_document_is_the_packaged_file_and_docs_holds_an_identical_copy() -> None:
    assert PACKAGED.read_bytes() == OPENAPI_DOCUMENT
    assert DOCS_COPY.read_bytes() == PACKAGED.read_bytes(), (
        "docs/openapi.json differs from sesender/http/openapi.json: copy the packaged file over it"
    )


def test_it_is_a_valid_openapi_3_1_document() -> None:
    spec = document()
    assert spec["openapi"].startswith("3.1.")
    validate(spec)


def test_every_route_is_described_and_every_description_is_a_route(app: SesenderApp) -> None:
    routes = app_operations(app)
    described = described_operations()
    undescribed = sorted(f"{method.upper()} {path}" for path, method in routes.keys() - described)
    stale = sorted(f"{method.upper()} {path}" for path, method in described.keys() - routes)
    assert not undescribed, f"routes missing from sesender/http/openapi.json: {undescribed}"
    assert not stale, f"openapi.json describes operations the app does not have: {stale}"


def test_path_parameters_match_the_route_arguments(app: SesenderApp) -> None:
    spec = document()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        item = spec["paths"].get(openapi_path(rule), {})
        for method in (rule.methods or set()) - AUTOMATIC_METHODS:
            operation = item.get(method.lower())
            if operation is None:
                continue  # reported by the drift test
            parameters = [resolve(p, spec) for p in item.get("parameters", [])]
            parameters += [resolve(p, spec) for p in operation.get("parameters", [])]
            in_path = {p["name"] for p in parameters if p["in"] == "path"}
            assert in_path == set(rule.arguments), (rule.rule, method)


def test_security_public_routes_have_none_and_the_others_need_the_api_key(
    app: SesenderApp,
) -> None:
    spec = document()
    assert spec["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-KEY",
        "description": spec["components"]["securitySchemes"]["ApiKey"]["description"],
    }
    assert spec["security"] == [{"ApiKey": []}]
    described = described_operations()
    for (path, method), endpoint in app_operations(app).items():
        operation = described.get((path, method))
        if operation is None:
            continue  # reported by the drift test
        responses = operation["responses"]
        if endpoint in PUBLIC_ENDPOINTS:
            assert operation.get("security") == [], f"{method} {path} is public"
            assert "401" not in responses, f"{method} {path} is public"
        else:
            assert "security" not in operation, f"{method} {path} needs the API key"
            assert "401" in responses, f"{method} {path} must document 401"
            assert "403" in responses, f"{method} {path} must document 403 (a key without scope)"


def test_every_operation_names_the_scopes_of_the_route_table(app: SesenderApp) -> None:
    """``x-scopes`` is what sesender/http/scopes.py says, operation for operation: a route added
    without a decision in the table, or described with other scopes, fails here."""
    described = described_operations()
    rules = {
        (openapi_path(rule), method.lower()): rule.rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in (rule.methods or set()) - AUTOMATIC_METHODS
    }
    for (path, method), rule in rules.items():
        operation = described.get((path, method))
        if operation is None:
            continue  # reported by the drift test
        access = ROUTE_SCOPES.get((method.upper(), rule))
        assert access is not None, f"{method.upper()} {rule} has no entry in ROUTE_SCOPES"
        assert operation.get("x-scopes") == scope_names(access), f"{method} {path}"


@pytest.mark.parametrize(
    ("path", "method", "statuses"),
    [
        ("/v1/messages", "post", {"200", "400", "401", "403", "409", "413", "415", "503"}),
        # 400 on a path parameter: a path that is not valid percent-encoded UTF-8.
        ("/v1/messages/{request_id}", "get", {"200", "400", "401", "403", "404", "410"}),
        ("/v1/topics/{topic_id}", "get", {"200", "400", "401", "403", "404"}),
        ("/v1/topics/{topic_id}", "delete", {"200", "400", "401", "403", "404", "503"}),
        ("/v1/events/open", "get", {"200"}),
        ("/v1/events/counts/sent", "get", {"200", "400", "401", "403"}),
        ("/health", "get", {"200"}),
        ("/ready", "get", {"200", "503"}),
        ("/openapi.json", "get", {"200"}),
    ],
)
def test_documented_statuses(path: str, method: str, statuses: set[str]) -> None:
    assert set(document()["paths"][path][method]["responses"]) == statuses


def test_every_error_response_is_the_error_schema() -> None:
    spec = document()
    for (path, method), operation in described_operations().items():
        for status, response in operation["responses"].items():
            if int(status) < 400 or (path, status) in {
                ("/ready", "503"),
                ("/v1/unsubscribe", "404"),
                ("/v1/unsubscribe", "410"),
                ("/v1/events/click/{token}/{code}", "404"),
            }:
                continue  # /ready's body says what is not ready; a recipient reads an HTML page
            schema = resolve(response, spec)["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)
    assert spec["components"]["schemas"]["Error"]["required"] == ["error"]
    assert spec["components"]["schemas"]["Error"]["properties"]["error"]["type"] == "string"


def resolve(node: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node and len(node) == 1:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


async def test_the_document_is_served_publicly_as_json(app: SesenderApp) -> None:
    response = await app.test_client().get("/openapi.json")
    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert await response.get_data() == PACKAGED.read_bytes()


# -- the patterns agree with the parser -----------------------------------------------------------


def message_input(field: str) -> dict[str, Any]:
    schema: dict[str, Any] = document()["components"]["schemas"]["MessageInput"]
    return dict(schema["properties"][field])


def matches(schema: dict[str, Any], text: str) -> bool:
    """The ``pattern`` / ``not.pattern`` / length keywords of ``schema`` (JSON Schema search)."""
    if "pattern" in schema and re.search(schema["pattern"], text) is None:
        return False
    if "not" in schema and re.search(schema["not"]["pattern"], text) is not None:
        return False
    shortest: int = schema.get("minLength", 0)
    longest: int = schema.get("maxLength", len(text))
    return shortest <= len(text) <= longest


WHITE_SPACE = [chr(code) for code in range(0x3001) if chr(code).isspace()]


@pytest.mark.parametrize("field", ["subject", "content"])
def test_blank_means_what_the_parser_strips(field: str) -> None:
    schema = message_input(field)
    for space in WHITE_SPACE:
        assert not matches(schema, space * 3), repr(space)
        assert matches(schema, f"{space}x{space}") is (field == "content" or space not in "\r\n")
    assert matches(schema, "\ufeff")  # not white space for str.strip either
    assert not matches(schema, "a\x00b")


def test_the_subject_is_one_line_and_the_topic_has_no_control_characters() -> None:
    subject = message_input("subject")
    assert matches(subject, "1월 뉴스레터")
    assert not matches(subject, "a\nb")
    assert not matches(subject, "a\n")
    assert not matches(subject, "x" * 999)
    topic = message_input("topic_id")
    assert matches(topic, "newsletter_2024_01")
    assert not matches(topic, "a\tb")
    assert not matches(topic, "a\x7f")


def test_the_original_schedule_format_pattern_accepts_exactly_the_real_dates() -> None:
    schedule = document()["components"]["schemas"]["SubmitRequest"]["properties"]["scheduled_at"]
    (original,) = [b for b in schedule["anyOf"] if "pattern" in b]
    pattern = re.compile(original["pattern"])
    for year in (1999, 2000, 2023, 2024, 2100, 2400, 9999):
        for month in range(1, 13):
            for day in range(1, 32):
                text = f"{year:04d}-{month:02d}-{day:02d} 23:59:59"
                try:
                    datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
                except ValueError:
                    real = False
                else:
                    real = True
                assert bool(pattern.match(text)) is real, text
    for text in ("2024-01-01 24:00:00", "2024-01-01 09:60:00", "0999-01-01 09:00:00"):
        assert pattern.match(text) is None, text


def test_x_scopes_appears_on_operations_only() -> None:
    """``x-scopes`` belongs to operations, not to the links or schemas that name them."""
    found: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "x-scopes":
                    found.append(where)
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}/{index}")

    walk(document(), "")
    operations = {f"/paths/{path}/{method}" for path, method in described_operations()}
    assert set(found) == operations
