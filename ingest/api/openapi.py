"""Build the OpenAPI 3.1 document from the very RouteSpecs the router serves."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

from ingest.api.http import RouteSpec

OPENAPI_PATH: Final = "/v1/openapi.json"

_PATH_PARAM_RE = re.compile(r"\{([^}/:]+)")
_PATH_REGEX_RE = re.compile(r"\{([^}/:]+):[^}]*\}")

_ERROR_SCHEMA: Final = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "message"],
            "properties": {
                "status": {"type": "integer"},
                "message": {"type": "string"},
            },
        }
    },
}


def path_parameters(path: str) -> list[str]:
    """Names of the ``{placeholders}`` in an aiohttp path template, in order."""
    return _PATH_PARAM_RE.findall(path)


def openapi_path(path: str) -> str:
    """An aiohttp path template as OpenAPI writes it: ``{name:.+}`` → ``{name}``."""
    return _PATH_REGEX_RE.sub(r"{\1}", path)


def build_openapi(
    specs: Iterable[RouteSpec], *, version: str, auth_enabled: bool
) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {"Error": _ERROR_SCHEMA}
    for spec in specs:
        for name, schema in spec.schemas.items():
            if schemas.setdefault(name, schema) != schema:
                raise ValueError(f"two different component schemas named {name!r}")
        operation: dict[str, Any] = {
            "operationId": spec.operation_id,
            "summary": spec.summary,
            **spec.extra,
            "responses": _responses(spec, auth_enabled=auth_enabled),
        }
        if auth_enabled and spec.public:
            operation["security"] = []
        paths.setdefault(openapi_path(spec.path), {})[spec.method.lower()] = operation
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Runstream API", "version": version},
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if auth_enabled:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"bearer": []}]
    return document


def _responses(spec: RouteSpec, *, auth_enabled: bool) -> dict[str, Any]:
    statuses = dict(spec.responses)
    if auth_enabled and not spec.public:
        statuses.setdefault(401, "Missing bearer token.")
        statuses.setdefault(403, "Wrong bearer token.")
    out: dict[str, Any] = {}
    for status in sorted(statuses):
        response: dict[str, Any] = {"description": statuses[status]}
        if status in spec.response_content:
            response["content"] = spec.response_content[status]
        elif status >= 400 and spec.method != "HEAD":
            response["content"] = {
                "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
            }
        out[str(status)] = response
    return out
