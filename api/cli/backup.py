"""`opsledger backup`, `opsledger restore`, `opsledger verify`: copies of the ledger and digests.

See store/backup.py for the digest and the copies; this module adds the CLI's refusals (a
running server, a PostgreSQL ledger) and resets the read model after a restore.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Annotated, Any

import duckdb
import orjson
import typer

from analytics.readmodel.model import pid_alive
from api.cli.common import err, fail, ledger, out
from store.backup import (
    BackupError,
    DestinationExists,
    Manifest,
    NewerBackup,
    NotABackup,
    TargetNotEmpty,
    backup_sqlite,
    check_revision,
    ledger_manifest,
    load_backup,
    manifest_document,
    partial_backups,
    read_manifest,
    restore_sqlite,
    sqlite_file,
)
from store.engine import display_url
from store.settings import Settings, get_settings

DOCS = "docs/deployment.md, section “Backup and restore”"


def _sqlite_or_fail(url: str, postgres_hint: str) -> Path:
    try:
        path = sqlite_file(url)
    except BackupError as exc:
        raise fail(str(exc), 2) from None
    if path is None:
        raise fail(f"the ledger {display_url(url)} is not SQLite: {postgres_hint} ({DOCS})", 2)
    return path


def _summary(m: Manifest) -> str:
    return (
        f"events 1..{m.head} ({m.event_count} events, {m.series_count} series), "
        f"{m.algorithm} {m.digest}"
    )


def backup(
    path: Annotated[Path, typer.Argument(help="New directory for the backup (must not exist).")],
) -> None:
    """Write a consistent copy of the SQLite ledger and its manifest, while the server runs.

    PATH gets `ledger.db` and `manifest.json` (head, counts, digest); it appears only once
    complete. For PostgreSQL use pg_dump (see docs/deployment.md).
    """
    url = get_settings().ledger_url
    _sqlite_or_fail(url, "record a manifest with `opsledger verify --json`, then use pg_dump -Fc")
    stale = partial_backups(path)
    try:
        doc = backup_sqlite(url, path)
    except DestinationExists as exc:
        raise fail(str(exc), 2) from None
    except BackupError as exc:
        raise fail(str(exc), 1) from None
    for p in stale:
        err.print(f"note: {p} was left by an interrupted backup; delete it", highlight=False)
    m = Manifest(
        doc["head"], doc["event_count"], doc["series_head"], doc["series_count"], doc["digest"]
    )
    out.print(f"backed up {_summary(m)} to {path}", highlight=False, soft_wrap=True)


def _refuse_running_server(settings: Settings) -> None:
    try:
        info = orjson.loads(settings.server_file.read_bytes())
        pid = int(info["pid"])
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return
    if pid != os.getpid() and pid_alive(pid):
        raise fail(
            f"a server (pid {pid}, {info.get('url', '?')}) holds this home's read model: stop "
            "it first (restore replaces the ledger under it and resets the read model)",
            3,
        )


def _reset_read_model(settings: Settings) -> list[Path]:
    """Delete the read model's files: the projections rebuild from the restored ledger."""
    model = settings.read_model
    removed: list[Path] = []
    for p in (model, model.with_name(model.name + ".wal"), settings.server_file):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    snapshots = model.parent / f".{model.name}.query-snapshots"
    if snapshots.exists():
        shutil.rmtree(snapshots, ignore_errors=True)
    return removed


def restore(
    path: Annotated[Path, typer.Argument(help="A backup directory written by `opsledger backup`.")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace a ledger that already holds events.")
    ] = False,
) -> None:
    """Replace the SQLite ledger with a backup, verified before and after; reset the read model.

    Refuses an incomplete or damaged backup, a ledger holding events (without --force) and a
    running server. For PostgreSQL use pg_restore (see docs/deployment.md).
    """
    from analytics.readmodel.model import ReadModel, ReadModelBusy
    from store.migrate import head_revision

    settings = get_settings()
    url = settings.ledger_url
    _sqlite_or_fail(
        url, "restore a pg_dump with pg_restore, then run `opsledger verify --manifest`"
    )
    try:
        check_revision(load_backup(path)[1], path)
    except (NotABackup, NewerBackup) as exc:
        raise fail(str(exc), 2) from None
    _refuse_running_server(settings)
    existed = settings.read_model.exists()
    model: ReadModel | None = None
    try:
        # Held through the restore: no server can open the read model (and start) meanwhile.
        model = ReadModel(settings.read_model)
    except ReadModelBusy as exc:
        raise fail(f"{exc}: stop it first", 3) from None
    except duckdb.Error:
        pass  # a damaged read model: no server can use it either, and it is reset below
    restored = False
    try:
        manifest, doc = restore_sqlite(path, url, force=force)
        restored = True
    except (NotABackup, NewerBackup) as exc:
        raise fail(str(exc), 2) from None
    except TargetNotEmpty as exc:
        raise fail(str(exc), 3) from None
    except (BackupError, sqlite3.Error) as exc:
        raise fail(str(exc), 1) from None
    finally:
        if model is not None:
            model.close()
        if restored or not existed:
            _reset_read_model(settings)
    out.print(
        f"restored {_summary(manifest)} from {path} into {display_url(url)}; verified",
        highlight=False,
        soft_wrap=True,
    )
    err.print(
        "the read model was reset: the projections rebuild from the restored ledger at the "
        "next `opsledger serve` or `opsledger project`",
        highlight=False,
    )
    revision, newest = doc.get("alembic_revision"), head_revision()
    if revision != newest:
        err.print(
            f"note: the backup's schema is at revision {revision}, this opsledger's is at "
            f"{newest}: run `opsledger db upgrade`",
            highlight=False,
        )


def _difference(actual: Manifest, expected: Manifest) -> str:
    if actual.head < expected.head:
        return (
            f"the ledger ends at position {actual.head}, before the manifest's head {expected.head}"
        )
    if actual.series_head < expected.series_head:
        return (
            f"the ledger holds series up to {actual.series_head}, the manifest up to "
            f"{expected.series_head}"
        )
    if actual.event_count != expected.event_count:
        return (
            f"the ledger holds {actual.event_count} events up to position {expected.head}, "
            f"the manifest {expected.event_count}"
        )
    return (
        f"events 1..{expected.head} have digest {actual.digest}, the manifest says "
        f"{expected.digest}: an event or a series was changed"
    )


def verify(
    manifest: Annotated[
        Path | None,
        typer.Option(
            help="A manifest.json (or a backup directory): check that the ledger's events up "
            "to its head match it."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Recompute the digest of the live ledger (SQLite or PostgreSQL) and print its manifest.

    With --manifest, exit status 1 when the ledger's events up to the manifest's head differ.
    """
    from store.migrate import current_revision

    url = get_settings().ledger_url
    expected: Manifest | None = None
    if manifest is not None:
        try:
            expected, _ = read_manifest(manifest)
        except NotABackup as exc:
            raise fail(str(exc), 2) from None
    engine = ledger().engine
    try:
        if expected is None:
            actual = ledger_manifest(engine)
        else:
            actual = ledger_manifest(engine, expected.head, expected.series_head)
        doc: dict[str, Any] = manifest_document(
            actual, kind="ledger", source_url=url, revision=current_revision(engine)
        )
    finally:
        engine.dispose()
    if expected is not None:
        doc["matches_manifest"] = actual.same_as(expected)
    if as_json:
        print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    else:
        for key in ("source", "alembic_revision", "head", "event_count", "series_count"):
            out.print(f"{key:<17} {doc[key]}", highlight=False, soft_wrap=True)
        out.print(
            f"{'digest':<17} {actual.algorithm} {actual.digest}", highlight=False, soft_wrap=True
        )
    if expected is None:
        if actual.event_count != actual.head:
            raise fail(
                f"positions are not contiguous: {actual.event_count} events up to head "
                f"{actual.head}",
                1,
            )
        return
    if not actual.same_as(expected):
        raise fail(f"the ledger differs from {manifest}: {_difference(actual, expected)}", 1)
    err.print(f"the ledger matches {manifest}: {_summary(expected)}", highlight=False)
