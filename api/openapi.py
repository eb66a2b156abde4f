"""The served OpenAPI document: every refusal in the one error envelope, as the app answers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi

from api.bodies import cloudevent_schema
from api.deps import get_projector
from api.schemas import ErrorResponse

ERROR_REF: Final = {"$ref": "#/components/schemas/ErrorResponse"}
#: What each refusal the routes share means, when a route says nothing more precise.
STANDARD: Final = {
    401: "No, unknown or revoked API key.",
    403: "The key's scope does not cover this route.",
    422: "A bad parameter or body field, named in `errors`.",
    503: "The read model is not open in this process, or has not caught up yet.",
    507: "The ledger's storage is full: nothing was written; free space and retry.",
}
#: FastAPI's own validation-error schemas: the app never answers with them.
_FASTAPI_SCHEMAS: Final = ("HTTPValidationError", "ValidationError")
#: Dependencies that answer 503 when the read model is not open in this process.
READ_MODEL_DEPENDENCIES: list[Callable[..., Any]] = [get_projector]


def install(app: FastAPI) -> None:
    """Serve the generated document with the refusals every route really answers."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            complete(schema, list(api_routes(app)))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def api_routes(app: FastAPI) -> Iterator[Any]:
    """Every API route of the app (an APIRoute, or newer FastAPI's context proxying one)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: app.routes is flat
        routes: list[Any] = list(app.routes)
    else:
        routes = list(iter_route_contexts(app.routes))
    for route in routes:
        if getattr(route, "dependant", None) is not None and route.include_in_schema:
            yield route


def _calls(dependant: Dependant) -> Iterator[Any]:
    for dep in dependant.dependencies:
        if dep.call is not None:
            yield dep.call
        yield from _calls(dep)


def refusals(route: Any) -> set[int]:
    """The error statuses a route can answer with because of its dependencies and inputs."""
    codes: set[int] = set()
    for call in _calls(route.dependant):
        scope = getattr(call, "opsledger_scope", None)
        if scope is not None:
            codes.add(401)
            # Every scope covers read: a read route refuses only unknown keys.
            if scope != "read":
                codes.add(403)
            # Write routes append to the ledger (api/disk_full.py answers when it cannot).
            if scope == "write":
                codes.add(507)
        if getattr(call, "opsledger_authenticates", False):
            codes.add(401)
        if call in READ_MODEL_DEPENDENCIES or getattr(call, "opsledger_read_model", False):
            codes.add(503)
    d = route.dependant
    if d.path_params or d.query_params or d.header_params or d.body_params:
        codes.add(422)
    return codes


def complete(schema: dict[str, Any], routes: list[Any]) -> None:
    """Declare each route's refusals in the error envelope; redirects carry no body."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    envelope = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(envelope.pop("$defs", {}))
    components["ErrorResponse"] = envelope
    components["CloudEvent"] = cloudevent_schema()
    for route in routes:
        for method in route.methods:
            op = schema["paths"].get(route.path_format, {}).get(method.lower())
            if op is None:
                continue
            responses = op.setdefault("responses", {})
            for code in sorted(refusals(route)):
                responses.setdefault(str(code), {"description": STANDARD[code]})
            for code, response in responses.items():
                _complete_response(int(code), response)
    for name in _FASTAPI_SCHEMAS:
        components.pop(name, None)


def _complete_response(code: int, response: dict[str, Any]) -> None:
    if 300 <= code < 400:
        response.pop("content", None)
        response.setdefault("headers", {})["Location"] = {
            "description": "Where to go next.",
            "schema": {"type": "string"},
        }
        return
    if code < 400:
        return
    content = response.setdefault("content", {})
    for media in list(content):
        ref = content[media].get("schema", {}).get("$ref", "")
        if ref.rsplit("/", 1)[-1] in (*_FASTAPI_SCHEMAS, "ErrorResponse"):
            # The error handlers answer JSON whatever the route's own media type is.
            del content[media]
            content["application/json"] = {"schema": ERROR_REF}
    if not content:
        content["application/json"] = {"schema": ERROR_REF}
