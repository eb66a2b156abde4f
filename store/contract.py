"""The CloudEvents contract (v1): attribute and per-type data validation into appendable events."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson
from pydantic import BaseModel, ValidationError

from store import datamodels
from store.errors import Conflict, ConflictError
from store.event_types import INCIDENT_PREFIX, EventType
from store.timefmt import MAX_US, TimeFormatError, format_us, parse_rfc3339_us

SPECVERSION: Final = "1.0"
METRIC_SAMPLES: Final = EventType.METRIC_SAMPLES.value

#: Every event type of the contract and the model its `data` must satisfy.
DATA_MODELS: Final[dict[str, type[BaseModel]]] = {
    EventType.METRIC_SAMPLES: datamodels.MetricSamples,
    EventType.K8S_EVENT: datamodels.KubernetesEvent,
    EventType.K8S_NODE_STATUS: datamodels.NodeStatus,
    EventType.K8S_POD_STATUS: datamodels.PodStatus,
    EventType.K8S_NODEPOOL_STATUS: datamodels.NodePoolStatus,
    EventType.SUBNET_STATUS: datamodels.SubnetStatus,
    EventType.FINDING: datamodels.Finding,
    EventType.INCIDENT_OPENED: datamodels.IncidentOpened,
    EventType.INCIDENT_ACKNOWLEDGED: datamodels.IncidentMilestone,
    EventType.INCIDENT_MITIGATED: datamodels.IncidentMilestone,
    EventType.INCIDENT_RESOLVED: datamodels.IncidentMilestone,
    EventType.INCIDENT_REOPENED: datamodels.IncidentMilestone,
    EventType.INCIDENT_SEVERITY_CHANGED: datamodels.IncidentSeverityChanged,
    EventType.INCIDENT_ANNOTATED: datamodels.IncidentAnnotated,
    EventType.INCIDENT_POSTMORTEM_LINKED: datamodels.IncidentPostmortemLinked,
    EventType.COST_DAILY: datamodels.CostDaily,
    EventType.COST_INSTANCE_TYPE_DAILY: datamodels.CostInstanceTypeDaily,
    EventType.BUDGET_SET: datamodels.BudgetSet,
    EventType.SLA_POLICY_SET: datamodels.SlaPolicy,
}
KNOWN_TYPES: Final = tuple(str(t) for t in DATA_MODELS)

#: Types whose events must name their cluster in the `cluster` extension attribute.
CLUSTER_SCOPED: Final = frozenset(
    {
        EventType.METRIC_SAMPLES,
        EventType.K8S_EVENT,
        EventType.K8S_NODE_STATUS,
        EventType.K8S_POD_STATUS,
        EventType.K8S_NODEPOOL_STATUS,
        EventType.SUBNET_STATUS,
        EventType.INCIDENT_OPENED,
    }
)

REQUIRED_ATTRIBUTES: Final = ("specversion", "id", "source", "type", "time", "data")
OPTIONAL_ATTRIBUTES: Final = ("cluster", "subject", "datacontenttype")
ALLOWED_ATTRIBUTES: Final = frozenset(REQUIRED_ATTRIBUTES + OPTIONAL_ATTRIBUTES)

MAX_ID_LENGTH: Final = 256
MAX_SOURCE_LENGTH: Final = 1024
MAX_SUBJECT_LENGTH: Final = 1024
MAX_DATA_STRING_LENGTH: Final = 65_536
MAX_DATA_DEPTH: Final = 32
MAX_SAMPLES_PER_EVENT: Final = 1_000_000
MAX_LABELS_PER_SERIES: Final = 32
MAX_LABEL_VALUE_LENGTH: Final = 1024

#: A cluster name: what the `cluster` attribute (and every cluster filter) accepts.
CLUSTER_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$"
_CLUSTER_RE = re.compile(CLUSTER_PATTERN)
_METRIC_NAME_RE = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:]{0,199}$")
_LABEL_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
_SAMPLE_KEYS = frozenset({"name", "labels", "ts", "value"})


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason an event was refused: its index in the request, the field and why."""

    index: int
    field: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """The problem as a JSON object."""
        return {"index": self.index, "field": self.field, "reason": self.reason}


class ContractError(ValueError):
    """One or more events broke the contract; nothing from the request may be written."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        first = self.problems[0] if self.problems else None
        summary = f"{first.field}: {first.reason}" if first else "invalid"
        super().__init__(f"{len(self.problems)} invalid event field(s); first: {summary}")


@dataclass(frozen=True, slots=True)
class SampleBatch:
    """Metric samples in canonical columnar form: series sorted by key, samples by (series, ts)."""

    series: tuple[tuple[str, str], ...]
    series_index: npt.NDArray[np.int64]
    ts_us: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def to_data(self) -> dict[str, Any]:
        """The batch as the contract's `data` object (timestamps in RFC 3339, UTC)."""
        names = [s[0] for s in self.series]
        labels = [orjson.loads(s[1]) for s in self.series]
        out = []
        cache: dict[int, str] = {}
        for i, t, v in zip(
            self.series_index.tolist(), self.ts_us.tolist(), self.values.tolist(), strict=True
        ):
            ts = cache.get(t)
            if ts is None:
                ts = cache[t] = format_us(t)
            out.append({"name": names[i], "labels": labels[i], "ts": ts, "value": v})
        return {"samples": out}


@dataclass(frozen=True, slots=True)
class Event:
    """A validated event, ready to append; `digest` identifies its content."""

    source: str
    id: str
    type: str
    time_us: int
    cluster: str | None
    subject: str | None
    data: Mapping[str, Any] | None
    samples: SampleBatch | None
    digest: bytes
    stream: str | None = field(default=None)

    @property
    def time(self) -> str:
        """The event time in RFC 3339 (UTC)."""
        return format_us(self.time_us)


def stream_for(event_type: str, data: Mapping[str, Any]) -> str | None:
    """The aggregate stream an event belongs to (incidents), or None."""
    if event_type.startswith(INCIDENT_PREFIX):
        return f"incident/{data['incident_id']}"
    return None


def _digest(
    event_type: str, time_us: int, cluster: str | None, subject: str | None, body: Iterable[bytes]
) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(orjson.dumps([event_type, time_us, cluster, subject]))
    for part in body:
        h.update(part)
    return h.digest()


def _str_attr(
    raw: Mapping[str, Any], name: str, index: int, max_len: int, problems: list[Problem]
) -> str | None:
    value = raw.get(name)
    if not isinstance(value, str):
        problems.append(Problem(index, name, f"must be a string, got {_kind(value)}"))
        return None
    if not value:
        problems.append(Problem(index, name, "must not be empty"))
        return None
    if len(value) > max_len:
        problems.append(Problem(index, name, f"is longer than {max_len} characters"))
        return None
    if not value.isprintable():
        problems.append(Problem(index, name, "must not contain control characters"))
        return None
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def validate_event(raw: Any, index: int = 0) -> Event:
    """Validate one structured-mode CloudEvent (a decoded JSON object) against the contract."""
    problems: list[Problem] = []
    event = _validate(raw, index, problems)
    if problems or event is None:
        raise ContractError(problems)
    return event


@dataclass(frozen=True, slots=True)
class ValidBatch:
    """A validated batch: each `(source, id)` once, and how many exact re-deliveries were folded."""

    events: list[Event]
    repeats: int
    #: For each event of `events`, the index of its first occurrence in the request.
    origins: list[int]


def validate_events(raws: Sequence[Any]) -> list[Event]:
    """Validate a batch; its events, each `(source, id)` once (see `validate_batch`)."""
    return validate_batch(raws).events


def validate_batch(raws: Sequence[Any]) -> ValidBatch:
    """Validate a batch, folding exact re-deliveries of an event into one.

    CloudEvents lets consumers treat the same `(source, id)` as one event, and at-least-once
    pipelines re-deliver inside one file or batch: identical content is a repeat (counted),
    other content a conflict. Raises ContractError listing every problem, then ConflictError.
    """
    problems: list[Problem] = []
    events: list[Event] = []
    origins: list[int] = []
    seen: dict[tuple[str, str], int] = {}
    conflicts: list[Conflict] = []
    repeats = 0
    for index, raw in enumerate(raws):
        event = _validate(raw, index, problems)
        if event is None:
            continue
        key = (event.source, event.id)
        first = seen.setdefault(key, len(events))
        if first == len(events):
            events.append(event)
            origins.append(index)
        elif events[first].digest == event.digest:
            repeats += 1
        else:
            conflicts.append(Conflict(index, event.source, event.id, None, origins[first]))
    if problems:
        raise ContractError(problems)
    if conflicts:
        raise ConflictError(conflicts)
    return ValidBatch(events, repeats, origins)


def reason_of(err: Mapping[str, Any]) -> str:
    """A pydantic error's message without its "Value error, " prefix."""
    return str(err["msg"]).removeprefix("Value error, ")


def _validate(raw: Any, index: int, problems: list[Problem]) -> Event | None:
    if not isinstance(raw, dict):
        problems.append(Problem(index, "", f"an event must be a JSON object, got {_kind(raw)}"))
        return None
    before = len(problems)
    for name in REQUIRED_ATTRIBUTES:
        if name not in raw:
            problems.append(Problem(index, name, "is required"))
    extra = sorted(k for k in raw if k not in ALLOWED_ATTRIBUTES)
    for name in extra:
        problems.append(
            Problem(
                index,
                str(name)[:100],
                "is not an attribute of the contract; allowed: "
                + ", ".join(sorted(ALLOWED_ATTRIBUTES)),
            )
        )
    if len(problems) > before:
        return None

    if raw["specversion"] != SPECVERSION:
        problems.append(Problem(index, "specversion", 'must be "1.0"'))
    event_id = _str_attr(raw, "id", index, MAX_ID_LENGTH, problems)
    source = _str_attr(raw, "source", index, MAX_SOURCE_LENGTH, problems)
    event_type = raw["type"]
    if not isinstance(event_type, str) or event_type not in DATA_MODELS:
        problems.append(
            Problem(index, "type", "is not a known type; known: " + ", ".join(KNOWN_TYPES))
        )
        event_type = None
    time_us: int | None = None
    if not isinstance(raw["time"], str):
        problems.append(Problem(index, "time", f"must be a string, got {_kind(raw['time'])}"))
    else:
        try:
            time_us = parse_rfc3339_us(raw["time"])
        except TimeFormatError as exc:
            problems.append(Problem(index, "time", str(exc)))
    cluster: str | None = None
    if "cluster" in raw:
        value = raw["cluster"]
        if not isinstance(value, str) or not _CLUSTER_RE.match(value):
            problems.append(
                Problem(index, "cluster", "must be 1-253 letters, digits, '.', '_' or '-'")
            )
        else:
            cluster = value
    elif event_type in CLUSTER_SCOPED:
        problems.append(Problem(index, "cluster", f"is required for {event_type} events"))
    subject: str | None = None
    if "subject" in raw:
        subject = _str_attr(raw, "subject", index, MAX_SUBJECT_LENGTH, problems)
    if "datacontenttype" in raw and raw["datacontenttype"] != "application/json":
        problems.append(Problem(index, "datacontenttype", 'must be "application/json"'))
    data = raw["data"]
    if not isinstance(data, dict):
        problems.append(Problem(index, "data", f"must be a JSON object, got {_kind(data)}"))
        return None
    if len(problems) > before or event_type is None or time_us is None:
        return None
    assert event_id is not None and source is not None

    if event_type == METRIC_SAMPLES:
        batch = _samples(data, index, problems)
        if batch is None:
            return None
        body = (
            orjson.dumps(batch.series),
            batch.series_index.tobytes(),
            batch.ts_us.tobytes(),
            batch.values.tobytes(),
        )
        digest = _digest(event_type, time_us, cluster, subject, body)
        return Event(source, event_id, event_type, time_us, cluster, subject, None, batch, digest)

    if not _check_json(data, index, "data", 0, problems):
        return None
    try:
        DATA_MODELS[event_type].model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
            problems.append(Problem(index, "data" + loc, reason_of(err)))
        return None
    canonical = orjson.dumps(_numeric_canonical(data), option=orjson.OPT_SORT_KEYS)
    digest = _digest(event_type, time_us, cluster, subject, (canonical,))
    return Event(
        source,
        event_id,
        event_type,
        time_us,
        cluster,
        subject,
        data,
        None,
        digest,
        stream_for(event_type, data),
    )


def _numeric_canonical(value: Any) -> Any:
    """A copy where integral floats are ints, so 42000 and 42000.0 are the same content."""
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < 2**63 else value
    if isinstance(value, dict):
        return {k: _numeric_canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numeric_canonical(v) for v in value]
    return value


def _check_json(value: Any, index: int, path: str, depth: int, problems: list[Problem]) -> bool:
    """Bound nesting and string sizes and refuse non-finite numbers anywhere in `data`."""
    if depth > MAX_DATA_DEPTH:
        problems.append(Problem(index, path, f"nests deeper than {MAX_DATA_DEPTH} levels"))
        return False
    if isinstance(value, str):
        if len(value) > MAX_DATA_STRING_LENGTH:
            problems.append(
                Problem(index, path, f"is longer than {MAX_DATA_STRING_LENGTH} characters")
            )
            return False
        return True
    if isinstance(value, float):
        if not math.isfinite(value):
            problems.append(Problem(index, path, "must be a finite number (no NaN or Infinity)"))
            return False
        return True
    if isinstance(value, dict):
        ok = True
        for k, v in value.items():
            if not isinstance(k, str) or len(k) > 256:
                problems.append(Problem(index, path, "has a key that is not a short string"))
                return False
            ok = _check_json(v, index, f"{path}.{k}", depth + 1, problems) and ok
        return ok
    if isinstance(value, list):
        ok = True
        for i, v in enumerate(value):
            ok = _check_json(v, index, f"{path}[{i}]", depth + 1, problems) and ok
        return ok
    if value is None or isinstance(value, bool | int):
        return True
    problems.append(Problem(index, path, f"is not a JSON value ({type(value).__name__})"))
    return False


def _samples(data: Mapping[str, Any], index: int, problems: list[Problem]) -> SampleBatch | None:
    """Validate `{"samples": [...]}` in one tight loop into a canonical columnar batch."""
    extra = [k for k in data if k != "samples"]
    if extra:
        problems.append(Problem(index, f"data.{extra[0]}", "is not allowed; data holds samples"))
        return None
    samples = data.get("samples")
    if not isinstance(samples, list):
        problems.append(Problem(index, "data.samples", "must be an array of samples"))
        return None
    if not samples:
        problems.append(Problem(index, "data.samples", "must hold at least one sample"))
        return None
    if len(samples) > MAX_SAMPLES_PER_EVENT:
        problems.append(
            Problem(index, "data.samples", f"holds more than {MAX_SAMPLES_PER_EVENT} samples")
        )
        return None
    n = len(samples)
    series_of: dict[tuple[str, bytes], int] = {}
    keys: list[tuple[str, str]] = []
    sidx = [0] * n
    ts = [0] * n
    vals = [0.0] * n
    ts_cache: dict[str, int] = {}
    dumps = orjson.dumps
    sort_keys = orjson.OPT_SORT_KEYS
    isfinite = math.isfinite
    before = len(problems)
    for j, s in enumerate(samples):
        if type(s) is not dict or s.keys() != _SAMPLE_KEYS:
            _sample_shape_problem(s, index, j, problems)
            if len(problems) - before >= 20:
                break
            continue
        name = s["name"]
        labels = s["labels"]
        if type(labels) is not dict:
            problems.append(Problem(index, f"data.samples[{j}].labels", "must be an object"))
            continue
        key = (name, dumps(labels, option=sort_keys)) if type(name) is str else None
        k = series_of.get(key) if key is not None else None
        if k is None:
            reason = _series_problem(name, labels)
            if reason is not None:
                problems.append(Problem(index, f"data.samples[{j}].{reason[0]}", reason[1]))
                continue
            assert key is not None
            k = series_of[key] = len(keys)
            keys.append((name, key[1].decode()))
        t = s["ts"]
        tt = type(t)
        if tt is int or tt is float:
            t_us = round(t * 1_000_000) if isfinite(t) else -1
            if not 0 <= t_us <= MAX_US:
                problems.append(
                    Problem(
                        index,
                        f"data.samples[{j}].ts",
                        "must be Unix seconds from 1970 to the end of year 2199",
                    )
                )
                continue
        elif tt is str:
            cached = ts_cache.get(t)
            if cached is None:
                try:
                    cached = ts_cache[t] = parse_rfc3339_us(t)
                except TimeFormatError as exc:
                    problems.append(Problem(index, f"data.samples[{j}].ts", str(exc)))
                    continue
            t_us = cached
        else:
            problems.append(
                Problem(index, f"data.samples[{j}].ts", "must be RFC 3339 or Unix seconds")
            )
            continue
        v = s["value"]
        tv = type(v)
        if not ((tv is float and isfinite(v)) or tv is int):
            problems.append(
                Problem(
                    index,
                    f"data.samples[{j}].value",
                    "must be a finite number (no NaN, Infinity, strings or booleans)",
                )
            )
            continue
        sidx[j] = k
        ts[j] = t_us
        vals[j] = float(v)
        if len(problems) - before >= 20:
            break
    if len(problems) > before:
        return None
    try:
        values = np.array(vals, dtype=np.float64)
    except OverflowError:
        problems.append(Problem(index, "data.samples", "holds a value too large for float64"))
        return None
    if not np.isfinite(values).all():
        bad = int(np.argmin(np.isfinite(values)))
        problems.append(Problem(index, f"data.samples[{bad}].value", "overflows float64"))
        return None
    return _canonical(
        keys, np.array(sidx, dtype=np.int64), np.array(ts, dtype=np.int64), values, index, problems
    )


def _canonical(
    keys: list[tuple[str, str]],
    sidx: npt.NDArray[np.int64],
    ts: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
    index: int,
    problems: list[Problem],
) -> SampleBatch | None:
    order = sorted(range(len(keys)), key=keys.__getitem__)
    rank = np.empty(len(keys), dtype=np.int64)
    rank[np.array(order, dtype=np.int64)] = np.arange(len(keys), dtype=np.int64)
    ranked = rank[sidx]
    perm = np.lexsort((ts, ranked))
    ranked, ts, values = ranked[perm], ts[perm], values[perm]
    if len(ts) > 1:
        dup = (ranked[1:] == ranked[:-1]) & (ts[1:] == ts[:-1])
        if dup.any():
            at = int(np.argmax(dup)) + 1
            problems.append(
                Problem(
                    index,
                    f"data.samples[{int(perm[at])}]",
                    f"repeats the series and ts of data.samples[{int(perm[at - 1])}]",
                )
            )
            return None
    series = tuple(keys[i] for i in order)
    return SampleBatch(series, ranked, ts, values)


def batch_from_columns(
    series: Sequence[tuple[str, Mapping[str, str]]],
    series_index: npt.ArrayLike,
    ts_us: npt.ArrayLike,
    values: npt.ArrayLike,
) -> SampleBatch:
    """Build a canonical batch from columns (collectors, the demo); raises ContractError."""
    problems: list[Problem] = []
    keys: list[tuple[str, str]] = []
    for name, labels in series:
        reason = _series_problem(name, labels)
        if reason is not None:
            problems.append(Problem(0, f"data.samples.{reason[0]}", reason[1]))
            raise ContractError(problems)
        keys.append((name, orjson.dumps(dict(labels), option=orjson.OPT_SORT_KEYS).decode()))
    if len(set(keys)) != len(keys):
        raise ContractError([Problem(0, "data.samples", "names the same series twice")])
    sidx = np.asarray(series_index, dtype=np.int64)
    ts = np.asarray(ts_us, dtype=np.int64)
    vals = np.asarray(values, dtype=np.float64)
    if not (sidx.shape == ts.shape == vals.shape) or sidx.ndim != 1 or len(sidx) == 0:
        raise ContractError([Problem(0, "data.samples", "columns must be 1-d, equal, non-empty")])
    if len(sidx) > MAX_SAMPLES_PER_EVENT:
        raise ContractError([Problem(0, "data.samples", "too many samples")])
    if (sidx < 0).any() or (sidx >= len(keys)).any():
        raise ContractError([Problem(0, "data.samples", "series index out of range")])
    if (ts < 0).any() or (ts > MAX_US).any():
        raise ContractError([Problem(0, "data.samples.ts", "out of range")])
    if not np.isfinite(vals).all():
        raise ContractError([Problem(0, "data.samples.value", "must be finite")])
    batch = _canonical(keys, sidx, ts, vals, 0, problems)
    if batch is None:
        raise ContractError(problems)
    return batch


def samples_event(
    source: str,
    event_id: str,
    time_us: int,
    cluster: str,
    batch: SampleBatch,
    subject: str | None = None,
) -> Event:
    """An `opsledger.metric.samples` event from an already canonical batch."""
    problems: list[Problem] = []
    _check_envelope(source, event_id, cluster, subject, time_us, problems)
    if problems:
        raise ContractError(problems)
    body = (
        orjson.dumps(batch.series),
        batch.series_index.tobytes(),
        batch.ts_us.tobytes(),
        batch.values.tobytes(),
    )
    digest = _digest(METRIC_SAMPLES, time_us, cluster, subject, body)
    return Event(source, event_id, METRIC_SAMPLES, time_us, cluster, subject, None, batch, digest)


def _check_envelope(
    source: str,
    event_id: str,
    cluster: str | None,
    subject: str | None,
    time_us: int,
    problems: list[Problem],
) -> None:
    raw = {"source": source, "id": event_id}
    _str_attr(raw, "id", 0, MAX_ID_LENGTH, problems)
    _str_attr(raw, "source", 0, MAX_SOURCE_LENGTH, problems)
    if cluster is not None and not _CLUSTER_RE.match(cluster):
        problems.append(Problem(0, "cluster", "must be 1-253 letters, digits, '.', '_' or '-'"))
    if subject is not None:
        _str_attr({"subject": subject}, "subject", 0, MAX_SUBJECT_LENGTH, problems)
    if not 0 <= time_us <= MAX_US:
        problems.append(Problem(0, "time", "is out of range"))


def _series_problem(name: Any, labels: Any) -> tuple[str, str] | None:
    if type(name) is not str or not _METRIC_NAME_RE.match(name):
        return ("name", "must be a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)")
    if not isinstance(labels, Mapping):
        return ("labels", "must be an object of string values")
    if len(labels) > MAX_LABELS_PER_SERIES:
        return ("labels", f"has more than {MAX_LABELS_PER_SERIES} labels")
    for k, v in labels.items():
        if not isinstance(k, str) or not _LABEL_NAME_RE.match(k):
            return ("labels", f"label name {str(k)[:100]!r} is not [a-zA-Z_][a-zA-Z0-9_]*")
        if not isinstance(v, str):
            return (f"labels.{k}", "must be a string")
        if len(v) > MAX_LABEL_VALUE_LENGTH:
            return (f"labels.{k}", f"is longer than {MAX_LABEL_VALUE_LENGTH} characters")
    return None


def _sample_shape_problem(s: Any, index: int, j: int, problems: list[Problem]) -> None:
    path = f"data.samples[{j}]"
    if not isinstance(s, dict):
        problems.append(Problem(index, path, f"must be an object, got {_kind(s)}"))
        return
    missing = sorted(_SAMPLE_KEYS - s.keys())
    if missing:
        problems.append(Problem(index, f"{path}.{missing[0]}", "is required"))
        return
    extra = sorted(str(k) for k in s.keys() - _SAMPLE_KEYS)
    problems.append(
        Problem(
            index,
            f"{path}.{extra[0][:100]}",
            "is not allowed; a sample has name, labels, ts, value",
        )
    )


def event_to_cloudevent(
    *,
    source: str,
    event_id: str,
    event_type: str,
    time_us: int,
    cluster: str | None,
    subject: str | None,
    data: Mapping[str, Any],
) -> dict[str, Any]:
    """A structured-mode CloudEvent object for the given attributes."""
    out: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": event_id,
        "source": source,
        "type": event_type,
        "time": format_us(time_us),
    }
    if cluster is not None:
        out["cluster"] = cluster
    if subject is not None:
        out["subject"] = subject
    out["datacontenttype"] = "application/json"
    out["data"] = data
    return out
