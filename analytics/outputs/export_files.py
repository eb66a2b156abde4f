"""Export encodings (Parquet, CSV, JSON Lines, Arrow IPC) batch by batch, Hive partitions, S3."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, Final, Literal, get_args
from urllib.parse import urlsplit

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from analytics.outputs.datasets import Dataset

Format = Literal["parquet", "csv", "jsonl", "arrow"]
FORMATS: Final[tuple[str, ...]] = get_args(Format)
CONTENT_TYPES: Final[dict[str, str]] = {
    "parquet": "application/vnd.apache.parquet",
    "csv": "text/csv; charset=utf-8; header=present",
    "jsonl": "application/x-ndjson",
    "arrow": "application/vnd.apache.arrow.stream",
}
#: Instants in CSV and JSON Lines: RFC 3339, UTC, always six fraction digits (one fixed
#: format, so pandas, Spark and BI tools parse a whole column with one pattern).
TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"  # Arrow's %S carries the microseconds
#: The partition Hive tools use for a null key.
NULL_PARTITION: Final = "__HIVE_DEFAULT_PARTITION__"
PART_FILE: Final = "part-0.parquet"
#: Rows turned into Python objects at once when writing JSON Lines, and the length from
#: which a string is escaped by the json module rather than orjson.
_JSONL_SLICE_ROWS: Final = 2048
_LONG_TEXT: Final = 64 * 1024
# Snappy: what every Parquet reader the docs name (Athena, Glue, Power BI, Tableau) reads.
_PARQUET_OPTIONS: Final[dict[str, Any]] = {"compression": "snappy"}


class _Sink:
    """A write-only file the encoders write into; drained after every batch."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._pos = 0
        self.closed = False

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._pos += len(chunk)
        return len(chunk)

    def flush(self) -> None:
        """Nothing is buffered here."""

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self.closed = True

    def drain(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def text_view(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch as CSV and JSON Lines print it: instants and dates as text."""
    arrays, fields = [], []
    for f, arr in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_timestamp(f.type):
            arr = pc.strftime(arr, TIME_FORMAT)
        elif pa.types.is_date(f.type):
            arr = arr.cast(pa.string())
        arrays.append(arr)
        fields.append(pa.field(f.name, arr.type))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


class Encoder:
    """One export body in one format: `write` per batch, then `finish`; each returns bytes."""

    def __init__(self, fmt: Format, schema: pa.Schema) -> None:
        self.format = fmt
        self.schema = schema
        self.rows = 0
        self._sink = _Sink()
        self._writer: Any = None
        if fmt == "parquet":
            self._writer = pq.ParquetWriter(self._sink, schema, **_PARQUET_OPTIONS)
        elif fmt == "arrow":
            self._writer = pa.ipc.new_stream(self._sink, schema)
        elif fmt == "csv":
            empty = pa.RecordBatch.from_pylist([], schema=schema)
            self._writer = pacsv.CSVWriter(self._sink, text_view(empty).schema)
        elif fmt != "jsonl":
            raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")

    def write(self, batch: pa.RecordBatch) -> bytes:
        """Encode one batch (of the encoder's schema); the bytes to send after the last ones."""
        self.rows += batch.num_rows
        if self.format == "jsonl":
            return _json_lines(text_view(batch))
        if self.format == "csv":
            self._writer.write_batch(text_view(batch))
        else:
            self._writer.write_batch(batch)
        return self._sink.drain()

    def finish(self) -> bytes:
        """Close the encoding (Parquet footer, Arrow end-of-stream); the last bytes."""
        if self._writer is not None:
            self._writer.close()
        return self._sink.drain()


def _json_lines(text: pa.RecordBatch) -> bytes:
    """The rows of a text view as JSON Lines, long strings escaped without orjson's big buffer."""
    # orjson escapes a string into a buffer about ten times its length: a sample event's
    # `data` (megabytes) cost hundreds of MiB. The json module's C escaper writes the same
    # bytes into an exact buffer, spliced in as a Fragment.
    long = [
        f.name
        for f, col in zip(text.schema, text.columns, strict=True)
        if pa.types.is_string(f.type)
        and len(col)
        and (pc.max(pc.utf8_length(col)).as_py() or 0) > _LONG_TEXT
    ]
    out = bytearray()
    # Slices bound the Python rows alive at once.
    for start in range(0, text.num_rows, _JSONL_SLICE_ROWS):
        for row in text.slice(start, _JSONL_SLICE_ROWS).to_pylist():
            for name in long:
                value = row[name]
                if value is not None and len(value) > _LONG_TEXT:
                    row[name] = orjson.Fragment(encode_basestring(value))
            out += orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
    return bytes(out)


def encode(batches: Iterable[pa.RecordBatch], fmt: Format, schema: pa.Schema) -> Iterator[bytes]:
    """The whole body, chunk by chunk."""
    enc = Encoder(fmt, schema)
    for batch in batches:
        chunk = enc.write(batch)
        if chunk:
            yield chunk
    yield enc.finish()


def _replace(tmp: Path, target: Path) -> None:
    """Rename `tmp` over `target`, keeping the mode `target` had (a new file: the umask's)."""
    try:
        mode = target.stat().st_mode & 0o777
    except FileNotFoundError:
        pass
    else:
        # An operator who narrowed an export's mode keeps it when the export is rewritten.
        os.chmod(tmp, mode)
    tmp.replace(target)


def write_file(path: Path, batches: Iterable[pa.RecordBatch], fmt: Format, ds: Dataset) -> int:
    """Write one file atomically (a temporary beside it, then renamed); returns the rows."""
    tmp = path.with_name(f".{path.name}.part")
    path.parent.mkdir(parents=True, exist_ok=True)
    enc = Encoder(fmt, ds.schema)
    try:
        with tmp.open("wb") as f:
            for batch in batches:
                f.write(enc.write(batch))
            f.write(enc.finish())
        _replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return enc.rows


# -- Hive partitions -------------------------------------------------------------------------


#: What Hive escapes in a partition value (FileUtils.escapePathName), `/` and `\` among them.
_HIVE_ESCAPED: Final = frozenset("\"#%'*/:=?\\\x7f{[]^") | {chr(c) for c in range(0x20)}


def hive_value(value: str) -> str:
    """A partition value as one path segment, `%XX`-escaped as Hive escapes it."""
    # The segment is always `key=value`: with `/` and `\` escaped, `..` cannot climb.
    escaped = "".join(f"%{ord(ch):02X}" if ch in _HIVE_ESCAPED else ch for ch in value)
    return escaped or NULL_PARTITION


def partition_key(ds: Dataset, month: str) -> str:
    """The relative key of one month's file: `dataset=<name>/month=YYYY-MM/part-0.parquet`."""
    # Values come from data: escaped, none can add a path segment or climb out of the root.
    return f"dataset={hive_value(ds.name)}/month={hive_value(month)}/{PART_FILE}"


def inside(root: Path, key: str) -> Path:
    """`root / key`, refusing (ValueError) a key that is absolute or climbs out of `root`."""
    # Lexical, not resolve(): a directory the operator symlinked elsewhere stays usable.
    norm = os.path.normpath(key)
    if os.path.isabs(norm) or norm == ".." or norm.startswith(".." + os.sep):
        raise ValueError(f"partition key {key!r} leaves {root}")
    return root / key


@dataclass(frozen=True, slots=True)
class Partition:
    """A written month: its relative key, local file and rows."""

    month: str
    key: str
    path: Path
    rows: int


class MonthPartitions:
    """Splits batches by the UTC month of the dataset's time column into Parquet files."""

    def __init__(self, root: Path, ds: Dataset) -> None:
        self.root = root
        self.ds = ds
        self._writers: dict[str, tuple[pq.ParquetWriter, Path]] = {}
        self._rows: dict[str, int] = {}

    def write(self, batch: pa.RecordBatch) -> None:
        """Append a batch's rows to their months' files."""
        col = batch.column(self.ds.time_column)
        months = pc.fill_null(pc.strftime(col, "%Y-%m"), NULL_PARTITION)
        for month in pc.unique(months).to_pylist():
            part = batch.filter(pc.equal(months, month))
            self._writer(str(month)).write_batch(part)
            self._rows[month] = self._rows.get(month, 0) + part.num_rows

    def _writer(self, month: str) -> pq.ParquetWriter:
        if month not in self._writers:
            path = inside(self.root, partition_key(self.ds, month))
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writers[month] = (
                pq.ParquetWriter(path, self.ds.schema, **_PARQUET_OPTIONS),
                path,
            )
        return self._writers[month][0]

    def close(self) -> list[Partition]:
        """Finish every file; the months written, in order."""
        out = []
        for month in sorted(self._writers):
            writer, path = self._writers[month]
            writer.close()
            out.append(Partition(month, partition_key(self.ds, month), path, self._rows[month]))
        self._writers.clear()
        return out


def write_partitions(
    staging: Path, batches: Iterable[pa.RecordBatch], ds: Dataset
) -> list[Partition]:
    """Write the months' files under `staging` (a fresh directory)."""
    parts = MonthPartitions(staging, ds)
    try:
        for batch in batches:
            parts.write(batch)
    finally:
        written = parts.close()
    return written


def publish_local(root: Path, written: list[Partition]) -> list[Path]:
    """Move staged month files into `root`, each replacing the month it rewrites."""
    out = []
    for p in written:
        target = inside(root, p.key)
        target.parent.mkdir(parents=True, exist_ok=True)
        if p.path.parent.stat().st_dev == target.parent.stat().st_dev:
            _replace(p.path, target)
        else:
            shutil.move(str(p.path), str(target))
        out.append(target)
    return out


#: AWS's general purpose bucket names: 3-63 lowercase letters, digits, dots and hyphens,
#: starting and ending with a letter or digit.
_BUCKET: Final = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# Prefixes and suffixes AWS reserves (access points, S3 Express, Object Lambda, tables).
_BUCKET_PREFIXES: Final = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_SUFFIXES: Final = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
#: S3's key limit, in UTF-8 bytes, less room for `dataset=…/month=…/part-0.parquet`.
_MAX_PREFIX_BYTES: Final = 1024 - 128


def check_bucket(bucket: str) -> None:
    """Raise ValueError unless `bucket` is a valid S3 bucket name (AWS's naming rules)."""
    if not _BUCKET.fullmatch(bucket):
        raise ValueError(
            f"bucket {bucket!r} is not a valid S3 bucket name: 3-63 lowercase letters, digits, "
            "dots and hyphens, starting and ending with a letter or digit"
        )
    if ".." in bucket or ".-" in bucket or "-." in bucket:
        raise ValueError(f"bucket {bucket!r}: no two dots, and no dot next to a hyphen")
    try:
        ipaddress.IPv4Address(bucket)
    except ValueError:
        pass
    else:
        raise ValueError(f"bucket {bucket!r}: a bucket name is not an IP address")
    if bucket.startswith(_BUCKET_PREFIXES) or bucket.endswith(_BUCKET_SUFFIXES):
        raise ValueError(f"bucket {bucket!r}: AWS reserves that prefix or suffix")


def check_prefix(prefix: str) -> None:
    """Raise ValueError unless `prefix` is `a/b/c`: no empty, `.` or `..` segment, no controls."""
    if not prefix:
        return
    for ch in prefix:
        if ord(ch) < 0x20 or ord(ch) == 0x7F or ch == "\\":
            raise ValueError(f"key prefix {prefix!r}: no control characters or backslashes")
    for segment in prefix.split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(f"key prefix {prefix!r}: no empty, `.` or `..` segments")
    if len(prefix.encode()) > _MAX_PREFIX_BYTES:
        raise ValueError(f"key prefix: at most {_MAX_PREFIX_BYTES} bytes")


def split_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/prefix` as (bucket, prefix without its trailing slash), both checked."""
    if not url.startswith("s3://"):
        raise ValueError("must be s3://bucket/prefix")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError("names no bucket: use s3://bucket/prefix")
    check_bucket(bucket)
    prefix = prefix.removesuffix("/")
    check_prefix(prefix)
    return bucket, prefix


def check_endpoint(url: str) -> None:
    """Raise ValueError unless `url` is an http(s) URL with a host and no credentials in it."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        # They would be printed in messages and logs; boto3 takes credentials elsewhere.
        raise ValueError("must not carry credentials (use AWS_ACCESS_KEY_ID and friends)")
    if parts.query or parts.fragment:
        raise ValueError("must have no query or fragment")


def publish_s3(client: Any, url: str, written: list[Partition], progress: Any = None) -> list[str]:
    """Upload staged month files under `s3://bucket/prefix` (multipart when large)."""
    bucket, prefix = split_s3_url(url)
    out = []
    for p in written:
        key = f"{prefix}/{p.key}" if prefix else p.key
        client.upload_file(
            str(p.path), bucket, key, ExtraArgs={"ContentType": CONTENT_TYPES["parquet"]}
        )
        out.append(f"s3://{bucket}/{key}")
        if progress is not None:
            progress(out[-1], p.rows)
    return out
