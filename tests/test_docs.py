"""The docs cover what exists: every route, CLI command and option, setting and event type."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from support import REPO
from support.docs import DOCS, headings, read_doc, section

from analytics.readmodel.model import ReadModel
from analytics.readmodel.registry import default_projections
from api.app import create_app
from api.cli.app import app as cli_app
from store.contract import KNOWN_TYPES, ContractError, validate_event
from store.migrate import upgrade
from store.settings import Settings

# FastAPI's own pages; they document themselves.
UNDOCUMENTED_ROUTES = frozenset({"/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"})
# The metric names the capacity and storage projections read (docs/events.md, "Canonical
# metrics and their sources").
CANONICAL_METRICS = (
    "node_cpu_usage_cores",
    "node_cpu_allocatable_cores",
    "node_memory_usage_bytes",
    "node_memory_allocatable_bytes",
    "namespace_cpu_usage_cores",
    "namespace_cpu_requests_cores",
    "namespace_memory_usage_bytes",
    "namespace_memory_requests_bytes",
    "namespace_pod_count",
    "pvc_used_bytes",
    "pvc_capacity_bytes",
)
_FENCE = re.compile(r"^```(\w*)\s*\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)


# -- HTTP API --------------------------------------------------------------------------------


def _route_pairs(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(METHOD, path) of routes, looking into mounts and (newer FastAPI) included routers."""
    for route in routes:
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if path is not None and methods:
            for method in methods:
                yield method, prefix + path
        elif path is not None and getattr(route, "routes", None):
            yield from _route_pairs(list(route.routes), prefix + path)
        candidates = getattr(route, "effective_candidates", None)
        if callable(candidates):
            yield from _route_pairs(list(candidates()), prefix)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[tuple[str, str]], Any]:
    """Every (METHOD, path) the application serves (not FastAPI's pages, HEAD), and its OpenAPI."""
    url = "sqlite:///" + str(tmp_path_factory.mktemp("docs") / "l.db")
    upgrade(url)
    app = create_app(Settings(database_url=url))
    try:
        openapi = app.openapi()
        pairs = set(_route_pairs(list(app.routes)))
    finally:
        app.state.ledger.engine.dispose()
    for path, operations in openapi["paths"].items():
        pairs.update((method.upper(), path) for method in operations)
    routes = sorted(
        (m, p) for m, p in pairs if p not in UNDOCUMENTED_ROUTES and m not in {"HEAD", "OPTIONS"}
    )
    assert ("POST", "/v1/events") in routes, routes
    return routes, openapi


def test_every_route_is_documented(served: tuple[list[tuple[str, str]], Any]) -> None:
    api = read_doc("api.md")
    titles = [title.replace("`", "") for _, _, title in headings(api)]
    missing = [
        f"{method} {path}"
        for method, path in served[0]
        if not any(re.search(re.escape(f"{method} {path}") + r"(?![\w/{-])", t) for t in titles)
    ]
    assert not missing, f"docs/api.md needs a heading for: {', '.join(missing)}"


def test_every_status_code_is_documented(served: tuple[list[tuple[str, str]], Any]) -> None:
    api = read_doc("api.md")
    routes, openapi = served
    for method, path in routes:
        part = section(api, re.compile(re.escape(f"{method} {path}") + r"(?![\w/{-])"))
        assert part is not None, f"docs/api.md needs a heading for {method} {path}"
        operation = openapi["paths"].get(path, {}).get(method.lower(), {})
        codes = sorted(c for c in operation.get("responses", {}) if c.isdigit())
        missing = [c for c in codes if not re.search(rf"\b{c}\b", part)]
        assert not missing, f"docs/api.md, {method} {path}: status code(s) {missing} unexplained"


# -- CLI -------------------------------------------------------------------------------------


def _commands(cmd: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        if not getattr(sub, "hidden", False):
            yield from _commands(sub, (*path, name))


CLI_COMMANDS = list(_commands(typer.main.get_command(cli_app), ("opsledger",)))


@pytest.mark.parametrize(
    ("path", "command"), CLI_COMMANDS, ids=[" ".join(p) for p, _ in CLI_COMMANDS]
)
def test_every_cli_command_and_option_is_documented(path: tuple[str, ...], command: Any) -> None:
    cli = read_doc("cli.md")
    name = " ".join(path)
    part = section(cli, re.compile("`" + re.escape(name) + "[ `]"))
    assert part is not None, f"docs/cli.md needs a heading with `{name}`"
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        if param.param_type_name == "argument":
            metavar = param.name.upper()
            assert metavar in part, f"docs/cli.md, `{name}`: argument {metavar} undocumented"
            continue
        for opt in [*param.opts, *param.secondary_opts]:
            if opt.startswith("--") and opt != "--help":
                assert re.search(re.escape(opt) + r"(?![\w-])", part), (
                    f"docs/cli.md, `{name}`: option {opt} undocumented"
                )


def test_cli_walk_finds_the_commands() -> None:
    names = {" ".join(p) for p, _ in CLI_COMMANDS}
    assert {"opsledger db upgrade", "opsledger keys create", "opsledger import"} <= names


# -- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_documented(field: str) -> None:
    text = read_doc("settings.md")
    env = f"OPSLEDGER_{field.upper()}"
    assert re.search(re.escape(env) + r"\b", text), f"docs/settings.md does not mention {env}"


# -- the event contract ----------------------------------------------------------------------


def _json_blocks(text: str) -> list[Any]:
    blocks = []
    for m in _FENCE.finditer(text):
        if m.group(1) == "json":
            blocks.append(json.loads(m.group(2)))
    return blocks


def _cloudevents(doc: Any) -> list[dict[str, Any]]:
    items = doc if isinstance(doc, list) else [doc]
    return [e for e in items if isinstance(e, dict) and "specversion" in e]


@pytest.mark.parametrize("event_type", KNOWN_TYPES)
def test_every_event_type_has_a_section(event_type: str) -> None:
    text = read_doc("events.md")
    pattern = re.compile("`" + re.escape(event_type) + "`")
    assert any(pattern.search(t) for _, _, t in headings(text)), (
        f"docs/events.md needs a heading for `{event_type}`"
    )


def test_every_cloudevent_example_validates_and_every_type_has_one() -> None:
    text = read_doc("events.md")
    examples = [e for doc in _json_blocks(text) for e in _cloudevents(doc)]
    assert examples, "docs/events.md has no CloudEvent examples"
    for example in examples:
        try:
            validate_event(example)
        except ContractError as exc:
            problems = "; ".join(f"{p.field}: {p.reason}" for p in exc.problems)
            pytest.fail(f"docs/events.md, example {example.get('id')!r} is invalid: {problems}")
    missing = set(KNOWN_TYPES) - {e["type"] for e in examples}
    assert not missing, f"docs/events.md has no valid example of: {sorted(missing)}"


def test_every_json_example_in_the_docs_parses() -> None:
    for page in sorted(DOCS.glob("*.md")):
        for m in _FENCE.finditer(page.read_text(encoding="utf-8")):
            if m.group(1) == "json":
                try:
                    json.loads(m.group(2))
                except json.JSONDecodeError as exc:
                    pytest.fail(f"docs/{page.name}: a ```json block does not parse: {exc}")


def test_every_canonical_metric_has_a_source() -> None:
    text = read_doc("events.md")
    part = section(text, re.compile("Canonical metrics"))
    assert part is not None, "docs/events.md needs a 'Canonical metrics' section"
    rows = [line for line in part.splitlines() if line.startswith("| `")]
    for metric in CANONICAL_METRICS:
        row = next((r for r in rows if r.startswith(f"| `{metric}` |")), None)
        assert row is not None, f"docs/events.md: no table row for {metric}"


# -- read model --------------------------------------------------------------------------------


def test_every_read_model_table_is_named_in_the_analytics_doc(tmp_path: Any) -> None:
    # Every table is queryable with POST /v1/query: a user must find what it holds.
    model = ReadModel(tmp_path / "rm.duckdb")
    try:
        con = model.cursor()
        for projection in default_projections():
            projection.create(con)
        tables = con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        names = {r[0] for r in tables}
    finally:
        model.close()
    doc = read_doc("analytics.md")
    missing = sorted(n for n in names if f"`{n}`" not in doc)
    assert not missing, f"docs/analytics.md does not name {missing}"


# -- README ----------------------------------------------------------------------------------


def test_readme_names_the_two_make_targets() -> None:
    readme = REPO / "README.md"
    assert readme.is_file(), "README.md is missing"
    text = readme.read_text(encoding="utf-8")
    for target in ("make run", "make test"):
        assert target in text, f"README.md does not mention `{target}`"
