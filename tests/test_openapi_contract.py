"""The OpenAPI document tells the truth: one error envelope, bounded instants, honest bodies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.beds import Bed, make_bed
from support.payloads import WEBHOOK_FIXTURES

from store.contract import KNOWN_TYPES

#: Answers that are pages for a browser, not the JSON error envelope.
HTML_REFUSALS = {("post", "/reports/login", "400"), ("post", "/reports/login", "401")}
#: The readiness probe's 503 is its own `Health` body (`status`, `detail`), read by kubelets.
PROBE = ("get", "/readyz", "503")
OUT_OF_RANGE = ("1969-12-31T23:59:59Z", "2200-01-01T00:00:00Z", "0000-01-01T00:00:00Z")


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    with make_bed(tmp_path_factory.mktemp("openapi")) as b:
        yield b


@pytest.fixture(scope="module")
def doc(bed: Bed) -> dict[str, Any]:
    r = bed.client.get("/openapi.json")
    assert r.status_code == 200
    out: dict[str, Any] = r.json()
    return out


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            yield method, path, op


def test_every_refusal_is_the_error_envelope(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert set(schemas["ErrorResponse"]["required"]) == {"detail"}
    assert set(schemas["ErrorResponse"]["properties"]) == {"detail", "errors"}
    # A 409's conflicts ride on the same envelope.
    assert {"detail", "errors", "conflicts"} <= set(schemas["ConflictResponse"]["properties"])
    envelopes = {"#/components/schemas/ErrorResponse", "#/components/schemas/ConflictResponse"}
    for method, path, op in operations(doc):
        for code, response in op["responses"].items():
            if int(code) < 400:
                continue
            if (method, path, code) == PROBE:
                continue
            if (method, path, code) in HTML_REFUSALS:
                assert list(response["content"]) == ["text/html"], (method, path, code)
                continue
            assert list(response["content"]) == ["application/json"], (method, path, code)
            ref = response["content"]["application/json"]["schema"].get("$ref")
            assert ref in envelopes, (method, path, code, ref)


def test_every_route_with_a_key_declares_401_and_its_scope_refusal(doc: dict[str, Any]) -> None:
    for method, path, op in operations(doc):
        if path in ("/healthz", "/readyz", "/openapi.json") or path.startswith("/reports/log"):
            continue
        assert "401" in op["responses"], (method, path)
        if method != "get" or path == "/v1/query":
            assert "403" in op["responses"] or path == "/metrics", (method, path)


def test_redirects_are_documented_without_a_body(bed: Bed, doc: dict[str, Any]) -> None:
    declared = doc["paths"]["/reports/logout"]["post"]["responses"]["303"]
    assert "content" not in declared and "Location" in declared["headers"]
    r = bed.client.post("/reports/logout", follow_redirects=False)
    assert r.status_code == 303 and r.content == b""
    assert r.headers["location"] == "/reports/login"


def test_bodies_the_routes_read_themselves_are_described(doc: dict[str, Any]) -> None:
    def body(method: str, path: str, media: str) -> dict[str, Any]:
        out: dict[str, Any] = doc["paths"][path][method]["requestBody"]["content"][media]["schema"]
        return out

    event = doc["components"]["schemas"]["CloudEvent"]
    types = {b["properties"]["type"]["enum"][0] for b in event["oneOf"]}
    assert "opsledger.incident.opened" in types and len(types) == len(event["oneOf"])
    assert body("post", "/v1/events", "application/json")["oneOf"][0] == {
        "$ref": "#/components/schemas/CloudEvent"
    }
    assert "alerts" in body("post", "/v1/webhooks/alertmanager", "application/json")["required"]
    assert "event" in body("post", "/v1/webhooks/pagerduty", "application/json")["required"]
    policy = body("put", "/v1/sla/policy", "application/yaml")
    assert "America/New_York" in policy["properties"]["timezone"]["enum"]
    form = body("post", "/reports/login", "application/x-www-form-urlencoded")
    assert form["required"] == ["key"]


def _instant_parameters(doc: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for method, path, op in operations(doc):
        if method != "get" or "{" in path:
            continue
        for p in op.get("parameters", []):
            branches = p["schema"].get("anyOf", [p["schema"]])
            if any(b.get("format") == "date-time" for b in branches):
                found.append((path, p["name"]))
    return found


def test_every_instant_parameter_refuses_out_of_range_values(bed: Bed, doc: dict[str, Any]) -> None:
    params = _instant_parameters(doc)
    # The window, as-of and paging instants of capacity, storage, incidents, SLA and exports.
    assert len(params) >= 12, params
    for path, name in params:
        url = path if "export" not in path else "/v1/export/events.jsonl"
        for value in OUT_OF_RANGE:
            r = bed.client.get(url, params={name: value}, headers=bed.headers("admin"))
            assert r.status_code == 422, (path, name, value, r.status_code, r.text)
            fields = [e["field"] for e in r.json()["errors"]]
            assert fields == [f"query.{name}"], (path, name, value, r.text)


@pytest.mark.parametrize("month", ["0000-01", "1969-12", "2200-01", "9999-12", "2026-13"])
def test_every_month_refuses_out_of_range_values(bed: Bed, month: str) -> None:
    r = bed.client.get("/v1/capacity/growth", params={"month": month}, headers=bed.headers())
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["query.month"]
    r = bed.client.get(f"/reports/capacity/{month}", headers=bed.headers())
    assert r.status_code == 422, r.text


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/incidents/INC-1/timeline", {"before": "99999999999999d"}),
        ("/v1/incidents/INC-1/timeline", {"after": "9999999d"}),
        ("/v1/storage/forecast", {"window": "999999999w"}),
        ("/v1/storage/forecast", {"horizon": "99999999999999999999d"}),
        ("/v1/digest", {"since": "999999w"}),
    ],
)
def test_huge_durations_are_refused_not_overflowed(
    bed: Bed, path: str, params: dict[str, str]
) -> None:
    r = bed.client.get(path, params=params, headers=bed.headers())
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == [f"query.{next(iter(params))}"]


def test_malformed_cluster_filters_name_the_field(bed: Bed) -> None:
    r = bed.client.get("/v1/events", params={"cluster": "bad cluster!"}, headers=bed.headers())
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "query.cluster"


def test_the_bed_serves_its_own_document(tmp_path: Path) -> None:
    # Two apps build the same document: nothing in it depends on the process's state.
    with make_bed(tmp_path) as other:
        first = other.client.get("/openapi.json").json()
        assert other.client.get("/openapi.json").json() == first


def test_the_declared_bodies_accept_what_the_routes_accept(doc: dict[str, Any]) -> None:
    """A body schema stricter than its route would make clients refuse valid input."""
    import json
    import re

    import jsonschema

    root = Path(__file__).resolve().parents[1]
    event = jsonschema.Draft202012Validator(doc["components"]["schemas"]["CloudEvent"])
    text = (root / "docs" / "events.md").read_text(encoding="utf-8")
    examples = [
        e
        for m in re.finditer(r"^```json\s*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
        for e in (lambda d: d if isinstance(d, list) else [d])(json.loads(m.group(1)))
        if isinstance(e, dict) and "specversion" in e
    ]
    assert {e["type"] for e in examples} == set(KNOWN_TYPES)
    for example in examples:
        assert not list(event.iter_errors(example)), example["id"]

    fixtures = WEBHOOK_FIXTURES
    for folder, path in (("alertmanager", "alertmanager"), ("pagerduty-v3", "pagerduty")):
        schema = doc["paths"][f"/v1/webhooks/{path}"]["post"]["requestBody"]["content"]
        check = jsonschema.Draft202012Validator(schema["application/json"]["schema"])
        payloads = sorted((fixtures / folder).glob("*.json"))
        assert payloads, f"no fixtures in {fixtures / folder}"
        for payload in payloads:
            assert not list(check.iter_errors(json.loads(payload.read_text()))), payload.name
