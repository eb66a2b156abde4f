"""At-least-once delivery: exact re-deliveries inside one batch or file are duplicates, not errors.

CloudEvents 1.0 lets consumers treat events with the same `source` and `id` as one; a queue
or delivery stream that writes files re-delivers inside a file. The same pair with other
content stays a conflict, and then nothing of the batch or file is written.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.beds import Bed, make_bed
from support.cli import run_cli
from support.payloads import (
    clone,
    cost_daily,
    incident_opened,
    k8s_event,
    metric_samples,
    pod_status,
    sample,
)

from ingest.files import import_bytes
from store.contract import validate_events
from store.ledger import Ledger
from store.migrate import upgrade

BATCH = "application/cloudevents-batch+json"
_runs = itertools.count(1)


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    with make_bed(tmp_path) as b:
        yield b


def jsonl(*events: Any) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


def respelled(ev: dict[str, Any]) -> dict[str, Any]:
    """The same event as another serializer writes it: keys reversed, the time's offset spelled."""
    out = {k: ev[k] for k in reversed(list(ev))}
    out["data"] = {k: ev["data"][k] for k in reversed(list(ev["data"]))}
    if out["time"].endswith("Z"):
        out["time"] = out["time"][:-1] + "+00:00"
    return out


def recorded(ledger: Ledger) -> dict[tuple[str, str], dict[str, Any]]:
    """Every recorded event by (source, id), as the ledger returns it (no ledger coordinates)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for e in ledger.iter_all():
        ce = e.to_cloudevent()
        for k in ("position", "recordedat", "stream", "streamversion"):
            ce.pop(k, None)
        assert (e.source, e.id) not in out, f"{(e.source, e.id)} recorded twice"
        out[(e.source, e.id)] = ce
    return out


# -- POST /v1/events -------------------------------------------------------------------------


def test_a_batch_with_exact_re_deliveries_is_accepted_and_counts_them(bed: Bed) -> None:
    inc, pod, prom = incident_opened("a-inc"), pod_status("a-pod"), metric_samples("a-prom")
    # The samples again with `ts` as Unix seconds and in another order: the same content.
    prom_again = clone(prom)
    prom_again["data"]["samples"] = [
        sample(s["name"], s["labels"], s["ts"], s["value"])
        for s in reversed(prom["data"]["samples"])
    ]
    prom_again["data"]["samples"][2]["ts"] = 1791950400  # 2026-10-14T04:00:00Z
    batch = [inc, pod, respelled(inc), prom, prom_again, pod, inc]
    r = bed.client.post("/v1/events", json=batch, headers=bed.headers("write", BATCH))
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 3, "duplicates": 4, "first_position": 1, "last_position": 3}
    assert [e["id"] for e in bed.get_events(limit=10).json()["events"]] == [
        "a-inc",
        "a-pod",
        "a-prom",
    ]
    # Sent again, the whole batch is duplicates, the in-batch ones counted the same way.
    r = bed.client.post("/v1/events", json=batch, headers=bed.headers("write", BATCH))
    assert r.json() == {
        "accepted": 0,
        "duplicates": 7,
        "first_position": None,
        "last_position": None,
    }
    assert bed.state() == (3, 3)


def test_a_batch_reusing_an_id_with_other_content_is_a_conflict_and_writes_nothing(
    bed: Bed,
) -> None:
    first = pod_status("c-pod", restarts=3)
    other = pod_status("c-pod", restarts=4)
    batch = [cost_daily("c-cost"), first, first, k8s_event("c-k8s"), other]
    r = bed.client.post("/v1/events", json=batch, headers=bed.headers("write", BATCH))
    assert r.status_code == 409, r.text
    body = r.json()
    assert "nothing was written" in body["detail"]
    assert "is at index 1 of the same batch" in body["detail"]
    assert body["conflicts"] == [
        {"index": 4, "source": first["source"], "id": "c-pod", "position": None, "first_index": 1}
    ]
    assert bed.state() == (0, 0)


def test_a_conflict_with_a_recorded_event_still_names_its_position(bed: Bed) -> None:
    assert bed.post_events([pod_status("r-pod", restarts=1)]).status_code == 200
    changed = pod_status("r-pod", restarts=2)
    k8s = k8s_event("r-k8s")
    r = bed.client.post(
        "/v1/events", json=[k8s, k8s, changed, changed], headers=bed.headers("write")
    )
    assert r.status_code == 409, r.text
    # The index is the request's own, although the ledger saw the batch folded.
    assert r.json()["conflicts"] == [
        {"index": 2, "source": changed["source"], "id": "r-pod", "position": 1, "first_index": None}
    ]
    assert bed.state() == (1, 1)


def test_invalid_events_are_reported_before_conflicts(bed: Bed) -> None:
    bad = pod_status("v-bad", restarts="three")
    batch = [pod_status("v-pod", restarts=1), pod_status("v-pod", restarts=2), bad]
    r = bed.client.post("/v1/events", json=batch, headers=bed.headers("write"))
    assert r.status_code == 422, r.text
    assert [e["index"] for e in r.json()["errors"]] == [2]
    assert bed.state() == (0, 0)


# -- opsledger import ------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path) -> tuple[Path, str]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    return tmp_path, url


def cli_import(home: tuple[Path, str], content: bytes, *flags: str) -> Any:
    path = home[0] / f"in-{next(_runs)}.jsonl"
    path.write_bytes(content)
    return run_cli(["import", *flags, str(path)], home[0], home[1])


def ids_in(url: str) -> list[str]:
    led = Ledger.from_url(url)
    try:
        return [e.id for e in led.iter_all()]
    finally:
        led.engine.dispose()


def test_import_of_an_at_least_once_export_counts_re_deliveries(home: tuple[Path, str]) -> None:
    a, b, c = pod_status("i-1"), metric_samples("i-2"), incident_opened("i-3", incident_id="I-3")
    r = cli_import(home, jsonl(a, b, a, c, respelled(c), b, a))
    assert (r.returncode, r.stdout.strip()) == (0, "accepted 3, duplicates 4, rejected 0"), r
    assert r.stderr == ""
    assert ids_in(home[1]) == ["i-1", "i-2", "i-3"]
    # The same file again: every line is a duplicate, whether of the ledger or of the file.
    r = cli_import(home, jsonl(a, b, a, c, respelled(c), b, a))
    assert (r.returncode, r.stdout.strip()) == (0, "accepted 0, duplicates 7, rejected 0"), r


def test_import_conflict_inside_the_file_writes_nothing_unless_skipped(
    home: tuple[Path, str],
) -> None:
    a, a2, b = pod_status("k-1", restarts=1), pod_status("k-1", restarts=2), k8s_event("k-2")
    content = jsonl(a, a2, a, b)
    r = cli_import(home, content)
    assert r.returncode == 1, r
    assert "line 2: id: conflicts with line 1: same (source, id), different content" in r.stderr
    assert "nothing was written" in r.stderr
    assert ids_in(home[1]) == []
    # --skip-invalid skips only the conflicting line: the first content stands, like a
    # conflict with the ledger, and line 3 is a re-delivery of line 1.
    r = cli_import(home, content, "--skip-invalid")
    assert r.returncode == 1, r
    assert "accepted 2, duplicates 1, rejected 1" in r.stdout
    assert ids_in(home[1]) == ["k-1", "k-2"]
    led = Ledger.from_url(home[1])
    try:
        assert led.read(0, 1)[0].data is not None and led.read(0, 1)[0].data["restarts"] == 1
    finally:
        led.engine.dispose()


@pytest.mark.slow
def test_re_deliveries_of_an_event_that_conflicts_with_the_ledger_are_rejected_with_it(
    home: tuple[Path, str],
) -> None:
    assert cli_import(home, jsonl(pod_status("l-1", restarts=1))).returncode == 0
    changed = pod_status("l-1", restarts=5)
    content = jsonl(changed, k8s_event("l-2"), changed)
    r = cli_import(home, content)
    assert r.returncode == 1, r
    assert "line 1: id: conflicts with the event at position 1" in r.stderr
    assert "line 3: id: conflicts with the event at position 1" in r.stderr
    assert ids_in(home[1]) == ["l-1"]
    r = cli_import(home, content, "--skip-invalid")
    assert r.returncode == 1, r
    assert "accepted 1, duplicates 0, rejected 2" in r.stdout
    assert ids_in(home[1]) == ["l-1", "l-2"]


# -- any ordering and any number of re-deliveries, on both backends --------------------------


def _pool(run: int) -> list[dict[str, Any]]:
    """Distinct events of several types; ids unique to this run so examples never meet."""
    return (
        [pod_status(f"p{run}-pod-{i}", restarts=i) for i in range(3)]
        + [metric_samples(f"p{run}-prom-{i}", time=f"2026-10-14T0{i}:00:00Z") for i in range(3)]
        + [
            incident_opened(f"p{run}-inc", incident_id=f"INC-P{run}"),
            cost_daily(f"p{run}-cost"),
            k8s_event(f"p{run}-k8s"),
        ]
    )


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    picks=st.lists(st.integers(0, 8), min_size=1, max_size=40),
    preload=st.sets(st.integers(0, 8), max_size=4),
    seed=st.integers(0, 2**32 - 1),
    array=st.booleans(),
)
def test_any_file_of_re_deliveries_records_each_event_exactly_once(
    ledger: Ledger, picks: list[int], preload: set[int], seed: int, array: bool
) -> None:
    run = next(_runs)
    pool = _pool(run)
    rng = random.Random(seed)
    # Some events are in the ledger already (an earlier, overlapping file).
    if preload:
        ledger.append(validate_events([pool[i] for i in sorted(preload)]))
    lines = [pool[i] if rng.random() < 0.5 else respelled(pool[i]) for i in picks]
    rng.shuffle(lines)
    text = orjson.dumps(lines) if array else jsonl(*lines)
    before = recorded(ledger)

    result = import_bytes(ledger, text)

    distinct = {(pool[i]["source"], pool[i]["id"]) for i in picks}
    new = distinct - before.keys()
    assert result.rejected == []
    assert (result.accepted, result.duplicates) == (len(new), len(picks) - len(new))
    after = recorded(ledger)
    assert after.keys() == before.keys() | distinct
    expected = {(e["source"], e["id"]): e for e in validate_events_back(pool)}
    for key in new:
        assert after[key] == expected[key]


def validate_events_back(pool: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events as the ledger gives them back (canonical time and samples, no coordinates)."""
    from store.contract import event_to_cloudevent

    out = []
    for ev in validate_events(pool):
        data = ev.data if ev.samples is None else ev.samples.to_data()
        assert data is not None
        out.append(
            event_to_cloudevent(
                source=ev.source,
                event_id=ev.id,
                event_type=ev.type,
                time_us=ev.time_us,
                cluster=ev.cluster,
                subject=ev.subject,
                data=data,
            )
        )
    return out
