"""Bad input to `POST /v1/events`, `GET /v1/events` and `opsledger import`: refused, explained,
and nothing written."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from support.beds import Bed, make_bed
from support.cli import run_cli, run_cli_many
from support.payloads import (
    clone,
    cost_daily,
    deep,
    incident_opened,
    k8s_event,
    metric_samples,
    node_status,
    pod_status,
    sample,
    seed_events,
)

from store.contract import KNOWN_TYPES, ContractError, validate_events
from store.ledger import Ledger
from store.migrate import upgrade

CE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
JSON = "application/json"
MAX_BATCH = 5
MAX_PAGE = 50
MAX_BODY = 1024 * 1024
LABELS = {"node": "n1", "nodepool": "general", "zone": "us-gov-west-1a"}


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    """One seeded ledger for the module: every case must leave it exactly as it was."""
    tmp = tmp_path_factory.mktemp("bad-input")
    with make_bed(
        tmp, max_batch_events=MAX_BATCH, max_page_size=MAX_PAGE, max_body_bytes=MAX_BODY
    ) as b:
        r = b.post_events(seed_events())
        assert r.status_code == 200, r.text
        assert b.state() == (3, 3)
        yield b


@dataclass(frozen=True)
class Case:
    """A bad request body and what the API must say about it."""

    body: bytes
    content_type: str | None
    status: int
    #: (index, field, substring of the reason) that `errors` must hold; empty for body-level
    #: errors (400/413/415), whose `detail` must then contain `detail`.
    errors: tuple[tuple[int | None, str, str], ...] = ()
    detail: str = ""


DROP = object()  # marks an attribute or field to remove


def js(value: Any) -> bytes:
    return orjson.dumps(value)


def ev_with(
    base: Callable[..., dict[str, Any]] = incident_opened, **changes: Any
) -> dict[str, Any]:
    """`base()` with attributes set, or removed where the value is `DROP`."""
    ev = base()
    for k, v in changes.items():
        if v is DROP:
            ev.pop(k, None)
        else:
            ev[k] = v
    return ev


def data_with(base: Callable[..., dict[str, Any]], path: str, value: Any) -> dict[str, Any]:
    """`base()` with `data.<path>` (dotted) set to value, or removed where it is `DROP`."""
    ev = base()
    node = ev["data"]
    *parents, last = path.split(".")
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if value is DROP:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return ev


def one_sample(**changes: Any) -> dict[str, Any]:
    s: dict[str, Any] = sample("node_cpu_usage_cores", LABELS, "2026-10-14T04:00:00Z", 1.5)
    for k, v in changes.items():
        if v is DROP:
            del s[k]
        else:
            s[k] = v
    return metric_samples("bad-prom", [s])


def too_deep_k8s() -> dict[str, Any]:
    ev = k8s_event("deep")
    ev["data"]["annotations"] = deep(40)
    return ev


def huge_string_k8s() -> dict[str, Any]:
    ev = k8s_event("huge")
    ev["data"]["message"] = "x" * 65_537
    return ev


def missing(attr: str) -> Case:
    return Case(js(ev_with(**{attr: DROP})), CE, 422, ((0, attr, "required"),))


CASES: dict[str, Case] = {
    # -- the body itself -----------------------------------------------------------------
    "malformed-json": Case(b'{"specversion": "1.0", "id": ', JSON, 400, detail="malformed JSON"),
    "trailing-garbage": Case(js(incident_opened()) + b"}", JSON, 400, detail="malformed JSON"),
    "empty-body": Case(b"", JSON, 400, detail="malformed JSON"),
    "empty-body-ce": Case(b"", CE, 400, detail="malformed JSON"),
    "json-scalar": Case(b"42", JSON, 400, detail="JSON object"),
    "json-string": Case(b'"an event"', CE, 400, detail="JSON object"),
    "json-null": Case(b"null", BATCH, 400, detail="array"),
    "wrong-content-type": Case(js(incident_opened()), "text/plain", 415, detail="content type"),
    "form-content-type": Case(
        b"a=1", "application/x-www-form-urlencoded", 415, detail="content type"
    ),
    "xml-content-type": Case(b"<event/>", "application/xml", 415, detail="content type"),
    "ce-with-array": Case(js([incident_opened()]), CE, 400, detail="one event object"),
    "batch-with-object": Case(js(incident_opened()), BATCH, 400, detail="JSON array"),
    "nan-literal": Case(
        js(pod_status()).replace(b'"restarts":3', b'"restarts":NaN'), JSON, 400, detail="JSON"
    ),
    "infinity-literal": Case(
        js(cost_daily()).replace(b'"amount":123.45', b'"amount":Infinity'), JSON, 400, detail="JSON"
    ),
    "overflowing-number-literal": Case(
        js(one_sample()).replace(b'"value":1.5', b'"value":1e999'), JSON, 400, detail="infinity"
    ),
    "utf8-bom": Case(b"\xef\xbb\xbf" + js(incident_opened()), CE, 400, detail="JSON"),
    "empty-batch": Case(b"[]", BATCH, 422, ((0, "", "at least one"),)),
    "event-not-an-object": Case(
        js([incident_opened(), "event"]), BATCH, 422, ((1, "", "must be a JSON object"),)
    ),
    # -- attributes ----------------------------------------------------------------------
    **{f"missing-{a}": missing(a) for a in ("specversion", "id", "source", "type", "time")},
    "missing-data": missing("data"),
    "extra-attribute": Case(
        js(ev_with(severity="P1")), CE, 422, ((0, "severity", "not an attribute"),)
    ),
    "specversion-0.3": Case(js(ev_with(specversion="0.3")), CE, 422, ((0, "specversion", "1.0"),)),
    "specversion-number": Case(js(ev_with(specversion=1.0)), CE, 422, ((0, "specversion", "1.0"),)),
    "unknown-type": Case(
        js(ev_with(type="opsledger.incident.closed")), CE, 422, ((0, "type", "known"),)
    ),
    "type-not-a-string": Case(
        js(ev_with(type=["opsledger.incident.opened"])), CE, 422, ((0, "type", ""),)
    ),
    "type-an-object": Case(js(ev_with(type={"name": "x"})), CE, 422, ((0, "type", ""),)),
    "naive-time": Case(js(ev_with(time="2026-10-14T04:00:00")), CE, 422, ((0, "time", "offset"),)),
    "date-only-time": Case(js(ev_with(time="2026-10-14")), CE, 422, ((0, "time", "RFC 3339"),)),
    "impossible-date": Case(
        js(ev_with(time="2026-02-30T04:00:00Z")), CE, 422, ((0, "time", "not a real"),)
    ),
    "impossible-hour": Case(
        js(ev_with(time="2026-10-14T25:00:00Z")), CE, 422, ((0, "time", "not a real"),)
    ),
    "impossible-offset": Case(
        js(ev_with(time="2026-10-14T04:00:00+25:00")), CE, 422, ((0, "time", "offset"),)
    ),
    "time-before-1970": Case(
        js(ev_with(time="1969-12-31T23:59:59Z")), CE, 422, ((0, "time", "1970"),)
    ),
    "time-a-number": Case(js(ev_with(time=1760414400)), CE, 422, ((0, "time", "string"),)),
    "id-a-number": Case(js(ev_with(id=42)), CE, 422, ((0, "id", "string"),)),
    "id-empty": Case(js(ev_with(id="")), CE, 422, ((0, "id", "empty"),)),
    "id-huge": Case(js(ev_with(id="i" * 257)), CE, 422, ((0, "id", "256"),)),
    "id-control-char": Case(js(ev_with(id="a\nb")), CE, 422, ((0, "id", "control"),)),
    "source-null": Case(js(ev_with(source=None)), CE, 422, ((0, "source", "string"),)),
    "cluster-missing": Case(
        js(ev_with(pod_status, cluster=DROP)), CE, 422, ((0, "cluster", "required"),)
    ),
    "cluster-missing-samples": Case(
        js(ev_with(metric_samples, cluster=DROP)), CE, 422, ((0, "cluster", "required"),)
    ),
    "cluster-bad-name": Case(
        js(ev_with(cluster="prod eks/1")), CE, 422, ((0, "cluster", "letters"),)
    ),
    "datacontenttype-xml": Case(
        js(ev_with(datacontenttype="application/xml")),
        CE,
        422,
        ((0, "datacontenttype", "application/json"),),
    ),
    # -- data ----------------------------------------------------------------------------
    "data-an-array": Case(js(ev_with(data=[1, 2])), CE, 422, ((0, "data", "JSON object"),)),
    "data-a-string": Case(js(ev_with(data="{}")), CE, 422, ((0, "data", "JSON object"),)),
    "data-null": Case(js(ev_with(data=None)), CE, 422, ((0, "data", "JSON object"),)),
    "data-huge-string": Case(
        js(huge_string_k8s()), CE, 422, ((0, "data.message", "longer than 65536"),)
    ),
    "data-too-deep": Case(
        js(too_deep_k8s()), CE, 422, ((0, "data.annotations" + ".a" * 32, "deeper than 32"),)
    ),
    "restarts-a-string": Case(
        js(pod_status(restarts="3")), CE, 422, ((0, "data.restarts", "integer"),)
    ),
    "restarts-negative": Case(js(pod_status(restarts=-1)), CE, 422, ((0, "data.restarts", "0"),)),
    "ready-yes": Case(js(node_status(ready="yes")), CE, 422, ((0, "data.ready", "bool"),)),
    "ready-one": Case(js(node_status(ready=1)), CE, 422, ((0, "data.ready", "bool"),)),
    "bool-as-number": Case(
        js(node_status(pods=True)), CE, 422, ((0, "data.allocatable.pods", "integer"),)
    ),
    "int-over-u64": Case(
        js(node_status()).replace(b'"pods":110', b'"pods":18446744073709551616'),
        CE,
        422,
        ((0, "data.allocatable.pods", "integer"),),
    ),
    "amount-a-string": Case(js(cost_daily(amount="12.5")), CE, 422, ((0, "data.amount", ""),)),
    "severity-p5": Case(
        js(data_with(incident_opened, "severity", "P5")), CE, 422, ((0, "data.severity", "P0"),)
    ),
    "incident-id-missing": Case(
        js(data_with(incident_opened, "incident_id", DROP)),
        CE,
        422,
        ((0, "data.incident_id", "required"),),
    ),
    "incident-unknown-field": Case(
        js(data_with(incident_opened, "owner", "bob")), CE, 422, ((0, "data.owner", "xtra"),)
    ),
    "k8s-event-without-object": Case(
        js(data_with(k8s_event, "involvedObject", DROP)), CE, 422, ((0, "data", "involvedObject"),)
    ),
    # -- metric samples ------------------------------------------------------------------
    "sample-missing-value": Case(
        js(one_sample(value=DROP)), CE, 422, ((0, "data.samples[0].value", "required"),)
    ),
    "sample-missing-labels": Case(
        js(one_sample(labels=DROP)), CE, 422, ((0, "data.samples[0].labels", "required"),)
    ),
    "sample-extra-field": Case(
        js(one_sample(unit="cores")), CE, 422, ((0, "data.samples[0].unit", "not allowed"),)
    ),
    "sample-value-string": Case(
        js(one_sample(value="1.5")), CE, 422, ((0, "data.samples[0].value", "finite number"),)
    ),
    "sample-value-bool": Case(
        js(one_sample(value=True)), CE, 422, ((0, "data.samples[0].value", "booleans"),)
    ),
    "sample-value-null": Case(
        js(one_sample(value=None)), CE, 422, ((0, "data.samples[0].value", "finite number"),)
    ),
    "sample-bad-label-name": Case(
        js(one_sample(labels={"node-name": "n1"})),
        CE,
        422,
        ((0, "data.samples[0].labels", "label name"),),
    ),
    "sample-label-value-number": Case(
        js(one_sample(labels={"node": 1})), CE, 422, ((0, "data.samples[0].labels.node", "string"),)
    ),
    "sample-bad-metric-name": Case(
        js(one_sample(name="node cpu")), CE, 422, ((0, "data.samples[0].name", "metric name"),)
    ),
    "sample-ts-before-1970": Case(
        js(one_sample(ts=-1)), CE, 422, ((0, "data.samples[0].ts", "1970"),)
    ),
    "sample-ts-text-before-1970": Case(
        js(one_sample(ts="1969-07-20T20:17:00Z")), CE, 422, ((0, "data.samples[0].ts", "1970"),)
    ),
    "sample-ts-naive": Case(
        js(one_sample(ts="2026-10-14T04:00:00")), CE, 422, ((0, "data.samples[0].ts", "offset"),)
    ),
    "sample-ts-bool": Case(
        js(one_sample(ts=True)), CE, 422, ((0, "data.samples[0].ts", "Unix seconds"),)
    ),
    "samples-empty": Case(
        js(metric_samples("e", [])), CE, 422, ((0, "data.samples", "at least one"),)
    ),
    "samples-extra-key": Case(
        js(data_with(metric_samples, "step", 60)), CE, 422, ((0, "data.step", "not allowed"),)
    ),
    "duplicate-sample": Case(
        js(
            metric_samples(
                "dup",
                [
                    sample("node_cpu_usage_cores", LABELS, "2026-10-14T00:00:00-04:00", 1.0),
                    sample("pvc_used_bytes", {"namespace": "a"}, 1760414400, 2.0),
                    sample("node_cpu_usage_cores", dict(reversed(LABELS.items())), 1791950400, 3),
                ],
            )
        ),
        CE,
        422,
        ((0, "data.samples[2]", "repeats the series and ts of data.samples[0]"),),
    ),
    # -- batches -------------------------------------------------------------------------
    # The same (source, id) with other content in one batch: a conflict, like one with the
    # ledger (an exact re-delivery would be a duplicate: tests/test_redelivery.py).
    "conflicting-source-id-in-batch": Case(
        js([pod_status("twin"), pod_status("twin", restarts=4)]),
        BATCH,
        409,
        detail="is at index 0 of the same batch with different content; nothing was written",
    ),
    "too-many-events": Case(
        js([pod_status(f"many-{i}") for i in range(MAX_BATCH + 1)]),
        BATCH,
        422,
        ((None, "", f"at most {MAX_BATCH}"),),
    ),
    "invalid-at-index-2": Case(
        js([pod_status("ok-0"), k8s_event("ok-1"), ev_with(pod_status, id="bad-2", time="now")]),
        BATCH,
        422,
        ((2, "time", "RFC 3339"),),
    ),
    "two-invalid-in-batch": Case(
        js(
            [
                ev_with(k8s_event, id=""),
                pod_status("fine"),
                data_with(incident_opened, "severity", "S1"),
            ]
        ),
        JSON,
        422,
        ((0, "id", "empty"), (2, "data.severity", "")),
    ),
}


def post_bytes(bed: Bed, body: Any, content_type: str | None) -> Any:
    headers = bed.headers("write", content_type)
    return bed.client.post("/v1/events", content=body, headers=headers)


def assert_error_body(body: Any) -> None:
    """The error contract: `detail` and a list of `{index, field, reason}`."""
    assert isinstance(body, dict), body
    assert isinstance(body.get("detail"), str) and body["detail"], body
    assert isinstance(body.get("errors"), list), body
    for e in body["errors"]:
        assert set(e) >= {"index", "field", "reason"}, e
        assert isinstance(e["field"], str) and isinstance(e["reason"], str) and e["reason"], e


def assert_names(body: dict[str, Any], expected: tuple[tuple[int | None, str, str], ...]) -> None:
    """Each (index, field, reason part) is in `errors`; only the expected indexes are listed."""
    for index, field, reason in expected:
        hits = [
            e
            for e in body["errors"]
            if e["field"] == field and (index is None or e["index"] == index)
        ]
        assert hits, f"no error for index {index} field {field!r} in {body['errors']}"
        assert any(reason in e["reason"] for e in hits), (reason, hits)
    wanted = {i for i, _, _ in expected if i is not None}
    if wanted:
        assert {e["index"] for e in body["errors"]} == wanted, body["errors"]


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_post_is_refused_explained_and_writes_nothing(bed: Bed, case: Case) -> None:
    before = bed.state()
    r = post_bytes(bed, case.body, case.content_type)
    assert r.status_code == case.status, r.text[:2000]
    body = r.json()
    assert_error_body(body)
    if case.errors:
        assert_names(body, case.errors)
        assert "nothing was written" in body["detail"]
    else:
        assert case.detail.lower() in body["detail"].lower(), body["detail"]
    assert bed.state() == before


def test_unknown_type_reason_lists_every_known_type(bed: Bed) -> None:
    r = post_bytes(bed, js(ev_with(type="opsledger.pager.paged")), CE)
    assert r.status_code == 422
    (err,) = r.json()["errors"]
    assert err["field"] == "type"
    for t in KNOWN_TYPES:
        assert t in err["reason"]


def test_every_missing_attribute_is_listed_at_once(bed: Bed) -> None:
    r = post_bytes(bed, js({"specversion": "1.0", "id": "x"}), CE)
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} >= {"source", "type", "time", "data"}


def test_invalid_event_at_index_2_writes_neither_0_nor_1(bed: Bed) -> None:
    batch = [pod_status("first"), k8s_event("second"), pod_status("third", restarts="x")]
    before = bed.state()
    r = post_bytes(bed, js(batch), BATCH)
    assert r.status_code == 422
    assert [(e["index"], e["field"]) for e in r.json()["errors"]] == [(2, "data.restarts")]
    assert bed.state() == before
    listed = bed.get_events(limit=MAX_PAGE).json()["events"]
    assert not {"first", "second", "third"} & {e["id"] for e in listed}


def test_boundaries_just_inside_the_limits_are_accepted(tmp_path: Path) -> None:
    """The limits are exact: 256-char ids, 65 536-char strings, 32 levels, max_batch events."""
    with make_bed(tmp_path, max_batch_events=MAX_BATCH) as b:
        long_id = ev_with(pod_status, id="i" * 256)
        big = k8s_event("big")
        big["data"]["message"] = "x" * 65_536
        nested = k8s_event("nested")
        nested["data"]["annotations"] = deep(31)  # data(0) > annotations(1) > ... 32 levels
        r = b.post_events([long_id, big, nested, one_sample(), cost_daily()])
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == MAX_BATCH


def test_sample_ts_beyond_9999_is_refused_and_cannot_poison_reads(tmp_path: Path) -> None:
    """253402300800 s is 10000-01-01T00:00:00Z: past the last representable instant."""
    with make_bed(tmp_path) as b:
        assert b.post_events(seed_events()).status_code == 200
        before = b.state()
        r = post_bytes(b, js(one_sample(ts=253_402_300_800)), CE)
        read = b.get_events(limit=10)
        assert read.status_code == 200, read.text  # a reader must never be broken by an event
        assert r.status_code == 422, r.text
        assert_names(r.json(), ((0, "data.samples[0].ts", ""),))
        assert b.state() == before


# -- in-process NaN / Infinity (not expressible in JSON) -----------------------------------


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (
            lambda: data_with(node_status, "allocatable.cpu_cores", float("nan")),
            "data.allocatable.cpu_cores",
        ),
        (lambda: cost_daily(amount=float("nan")), "data.amount"),
        (lambda: one_sample(value=float("nan")), "data.samples[0].value"),
        (lambda: one_sample(value=float("-inf")), "data.samples[0].value"),
        (lambda: one_sample(ts=float("inf")), "data.samples[0].ts"),
        (lambda: one_sample(ts=float("nan")), "data.samples[0].ts"),
        (lambda: data_with(k8s_event, "count", float("nan")), "data.count"),
    ],
    ids=["node-cpu-nan", "cost-nan", "value-nan", "value-neg-inf", "ts-inf", "ts-nan", "k8s-nan"],
)
def test_non_finite_numbers_injected_in_process_are_refused(
    make: Callable[[], dict[str, Any]], field: str
) -> None:
    ev = make()
    with pytest.raises(ContractError) as info:
        validate_events([pod_status("ok"), ev])
    problems = [(p.index, p.field) for p in info.value.problems]
    assert problems == [(1, field)], info.value.problems
    assert all(p.reason for p in info.value.problems)


# -- oversized bodies ------------------------------------------------------------------------


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Bed]:
    with make_bed(tmp_path, max_body_bytes=1024) as b:
        assert b.post_events(seed_events()[:1]).status_code == 200
        yield b


def _big_batch() -> bytes:
    body = js([pod_status(f"big-{i}") for i in range(20)])
    assert len(body) > 2048
    return body


def test_oversized_body_with_content_length_is_413(small: Bed) -> None:
    before = small.state()
    r = post_bytes(small, _big_batch(), BATCH)
    assert r.status_code == 413, r.text
    assert_error_body(r.json())
    assert "OPSLEDGER_MAX_BODY_BYTES" in r.json()["detail"]
    assert small.state() == before


def test_oversized_chunked_body_without_content_length_is_413(small: Bed) -> None:
    body = _big_batch()

    def chunks() -> Iterator[bytes]:
        for k in range(0, len(body), 300):
            yield body[k : k + 300]

    before = small.state()
    r = small.client.post("/v1/events", content=chunks(), headers=small.headers("write", BATCH))
    assert r.request.headers.get("content-length") is None
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert r.status_code == 413, r.text
    assert "OPSLEDGER_MAX_BODY_BYTES" in r.json()["detail"]
    assert small.state() == before


def test_body_just_under_the_limit_is_accepted(small: Bed) -> None:
    ev = pod_status("fits")
    body = js(ev)
    ev["data"]["reason"] = "r" * (1024 - len(body) - len(b',"reason":""'))
    body = js(ev)
    assert len(body) == 1024
    r = post_bytes(small, body, CE)
    assert r.status_code == 200, r.text


# -- GET /v1/events --------------------------------------------------------------------------

GET_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "limit-0": ({"limit": 0}, "query.limit"),
    "limit-over-max-page-size": ({"limit": MAX_PAGE + 1}, "query.limit"),
    "limit-not-a-number": ({"limit": "ten"}, "query.limit"),
    "after-negative": ({"after": -1}, "query.after"),
    "after-beyond-int64": ({"after": 2**63}, "query.after"),
    "since-malformed": ({"since": "yesterday"}, "query.since"),
    "since-naive": ({"since": "2026-10-01T00:00:00"}, "query.since"),
    "until-impossible": ({"until": "2026-02-30T00:00:00Z"}, "query.until"),
    "unknown-type": ({"type": "opsledger.nope"}, "query.type"),
    "unknown-type-in-comma-list": (
        {"type": "opsledger.k8s.event,opsledger.nope"},
        "query.type",
    ),
}


@pytest.mark.parametrize(("params", "field"), list(GET_CASES.values()), ids=list(GET_CASES))
def test_bad_query_is_422_naming_the_parameter(
    bed: Bed, params: dict[str, Any], field: str
) -> None:
    before = bed.state()
    r = bed.get_events(**{"limit": 10, **params})
    assert r.status_code == 422, r.text
    body = r.json()
    assert_error_body(body)
    name = field.split(".")[1]
    assert name in body["detail"] or any(name in e["field"] for e in body["errors"]), body
    # The error contract: a validation error lists the field at fault in `errors`.
    assert [e["field"] for e in body["errors"]] == [field], body
    assert bed.state() == before


def test_unknown_type_query_lists_the_known_types(bed: Bed) -> None:
    r = bed.get_events(type="opsledger.nope", limit=10)
    assert r.status_code == 422
    text = r.text
    assert all(t in text for t in KNOWN_TYPES)


# -- opsledger import ------------------------------------------------------------------------


@dataclass
class Home:
    """A migrated, seeded ledger the CLI reaches through OPSLEDGER_HOME."""

    path: Path
    url: str

    def state(self) -> tuple[int, list[str]]:
        led = Ledger.from_url(self.url)
        try:
            return led.head(), [e.id for e in led.iter_all()]
        finally:
            led.engine.dispose()

    def run(self, *args: str, stdin: bytes | None = None) -> Any:
        return run_cli(list(args), self.path, self.url, stdin=stdin)

    def run_many(self, *calls: list[str]) -> list[Any]:
        return run_cli_many(list(calls), self.path, self.url)

    def write(self, name: str, content: bytes) -> str:
        p = self.path / name
        p.write_bytes(content)
        return str(p)


@pytest.fixture
def home(tmp_path: Path) -> Home:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    led = Ledger.from_url(url)
    led.append(validate_events(seed_events()))
    led.engine.dispose()
    return Home(tmp_path, url)


def jsonl(*events: Any) -> bytes:
    return b"".join((e if isinstance(e, bytes) else orjson.dumps(e)) + b"\n" for e in events)


def _mixed_file() -> bytes:
    return jsonl(
        pod_status("imp-1"),
        ev_with(pod_status, id="imp-2", time=DROP),
        k8s_event("imp-3"),
        b'{"specversion": "1.0", ',
        b"",
        node_status("imp-6", ready="yes"),
        cost_daily("imp-7"),
    )


@pytest.mark.slow
def test_import_is_atomic_by_default(home: Home) -> None:
    before = home.state()
    r = home.run("import", home.write("mixed.jsonl", _mixed_file()))
    assert r.returncode == 1, r
    assert "line 2: time: is required" in r.stderr
    assert "line 4: malformed JSON" in r.stderr
    assert "line 6: data.ready: " in r.stderr
    assert "line 1:" not in r.stderr and "line 3:" not in r.stderr and "line 7:" not in r.stderr
    assert "nothing was written" in r.stderr
    assert "accepted 0, duplicates 0, rejected 3" in r.stdout
    assert home.state() == before


@pytest.mark.slow
def test_import_skip_invalid_writes_the_valid_ones(home: Home) -> None:
    head, ids = home.state()
    r = home.run("import", "--skip-invalid", home.write("mixed.jsonl", _mixed_file()))
    assert r.returncode == 1, r
    for n in (2, 4, 6):
        assert f"line {n}:" in r.stderr
    assert "nothing was written" not in r.stderr
    assert "accepted 3, duplicates 0, rejected 3" in r.stdout
    assert home.state() == (head + 3, [*ids, "imp-1", "imp-3", "imp-7"])


@pytest.mark.slow
def test_import_clean_file_then_reimport_counts_duplicates(home: Home) -> None:
    path = home.write("clean.jsonl", jsonl(pod_status("c1"), k8s_event("c2"), metric_samples("c3")))
    head, ids = home.state()
    r = home.run("import", path)
    assert r.returncode == 0, r
    assert r.stdout.strip() == "accepted 3, duplicates 0, rejected 0"
    assert home.state() == (head + 3, [*ids, "c1", "c2", "c3"])
    r = home.run("import", path)
    assert r.returncode == 0, r
    assert r.stdout.strip() == "accepted 0, duplicates 3, rejected 0"
    assert home.state()[0] == head + 3


@pytest.mark.slow
def test_import_json_array_and_single_object_files(home: Home) -> None:
    head, _ = home.state()
    array = orjson.dumps([pod_status("a1"), k8s_event("a2")], option=orjson.OPT_INDENT_2)
    r = home.run("import", home.write("events.json", array))
    assert (r.returncode, r.stdout.strip()) == (0, "accepted 2, duplicates 0, rejected 0"), r
    one = orjson.dumps(incident_opened("o1", incident_id="INC-9"), option=orjson.OPT_INDENT_2)
    assert one.count(b"\n") > 3  # pretty-printed over many lines, still one object
    r = home.run("import", home.write("one.json", one))
    assert (r.returncode, r.stdout.strip()) == (0, "accepted 1, duplicates 0, rejected 0"), r
    assert home.state()[0] == head + 3


@pytest.mark.slow
def test_import_json_array_with_a_bad_item_names_its_index(home: Home) -> None:
    before = home.state()
    array = orjson.dumps([pod_status("b1"), pod_status("b2", restarts="3")])
    r = home.run("import", home.write("bad.json", array))
    assert r.returncode == 1, r
    assert "index 1: data.restarts: " in r.stderr
    assert home.state() == before


@pytest.mark.slow
def test_import_from_stdin(home: Home) -> None:
    head, _ = home.state()
    r = home.run("import", "-", stdin=jsonl(pod_status("s1"), cost_daily("s2")))
    assert (r.returncode, r.stdout.strip()) == (0, "accepted 2, duplicates 0, rejected 0"), r
    r = home.run("import", "-", stdin=jsonl(pod_status("s3", restarts=True)))
    assert r.returncode == 1
    assert "line 1: data.restarts: " in r.stderr
    assert home.state()[0] == head + 2


@pytest.mark.slow
def test_import_conflicts_and_repeats_are_rejected(home: Home) -> None:
    before = home.state()
    seeded = seed_events()[1]  # pod-status "seed-pod", recorded with restarts=3
    changed = clone(seeded)
    changed["data"]["restarts"] = 99
    content = jsonl(
        pod_status("new-1"), changed, pod_status("new-1"), pod_status("new-1", restarts=7)
    )
    r, r2 = home.run_many(
        ["import", home.write("conflict.jsonl", content)],
        ["import", home.write("conflict2.jsonl", jsonl(pod_status("new-2"), changed))],
    )
    assert r.returncode == 1, r
    # Line 3 is an exact re-delivery of line 1 (a duplicate); line 4 reuses its id with other
    # content, a conflict that keeps the whole file out.
    assert "line 4: id: conflicts with line 1: same (source, id), different content" in r.stderr
    assert "line 3" not in r.stderr
    assert home.state() == before
    r = r2
    assert r.returncode == 1, r
    assert "line 2: id: conflicts with the event at position 2" in r.stderr
    assert home.state() == before
    r = home.run(
        "import", "--skip-invalid", home.write("c3.jsonl", jsonl(pod_status("new-2"), changed))
    )
    assert r.returncode == 1, r
    assert "accepted 1, duplicates 0, rejected 1" in r.stdout
    assert home.state()[1][-1] == "new-2"


@pytest.mark.slow
def test_import_non_string_type_is_a_rejection_not_a_crash(home: Home) -> None:
    before = home.state()
    r = home.run("import", home.write("t.jsonl", jsonl(ev_with(type=["opsledger.finding"]))))
    assert r.returncode == 1, r
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "line 1: type: " in r.stderr
    assert home.state() == before


def test_import_missing_file_is_a_usage_error(home: Home) -> None:
    r = home.run("import", str(home.path / "nope.jsonl"))
    assert r.returncode == 2
    assert "cannot read" in r.stderr
