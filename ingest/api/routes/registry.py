"""Read-only Confluent Schema Registry endpoints for the schemas in ``schemas/manifest.json``.

Events on the topic are in Confluent's wire format with *static* schema ids (see
``schemas/codec.py``), so the "registry" is a fixed table: every (subject, version, id,
schema text) of the manifest, as ``schemas.codec.schema_versions()`` lists it. Serving it
under Confluent's paths lets standard tooling read the topic with no extra server::

    SchemaRegistryClient({"url": RUNSTREAM_API})   # confluent-kafka's AvroDeserializer

Endpoints (no ``/v1`` prefix: clients append Confluent's paths to the base URL):

    GET /schemas/ids/{id}                          {"schema": "<schema text>"}
    GET /schemas/ids/{id}/schema                   the schema itself (JSON)
    GET /schemas/ids/{id}/versions                 [{"subject": s, "version": v}, …]
    GET /schemas/types                             ["AVRO"]
    GET /subjects                                  [subject, …]  (?subjectPrefix=)
    GET /subjects/{subject}/versions               [1, 2, …]
    GET /subjects/{subject}/versions/{version}     {"subject", "version", "id", "schema"}
    GET /subjects/{subject}/versions/{version}/schema   the schema itself (JSON)
    GET /config                                    {"compatibilityLevel": "FULL_TRANSITIVE"}

``{version}`` is a positive integer, ``latest`` or ``-1`` (Confluent's alias for latest).
Query parameters Confluent defines for these paths (``subject``, ``format``,
``deleted``, …) are accepted and ignored: nothing is ever deleted, and Avro has one format.

Responses use Confluent's content type ``application/vnd.schemaregistry.v1+json``, and
so do these routes' errors, in *Confluent's* error shape rather than ours, because
registry clients parse that shape (``SchemaRegistryError.error_code``)::

    404 {"error_code": 40401, "message": "Subject 'x' not found."}
    404 {"error_code": 40402, "message": "Version 7 not found."}
    404 {"error_code": 40403, "message": "Schema 9 not found"}
    422 {"error_code": 42202, "message": "The specified version '0' is not a valid …"}

Errors raised by the shared middlewares keep Runstream's shape: 401/403 when a token is
configured (the registry is not public; confluent-kafka sends one with
``bearer.auth.*``), 405 for the write methods this read-only registry does not serve.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from aiohttp import web

from ingest.api.http import RouteHandler, RouteSpec
from schemas.codec import SchemaVersion, schema_versions

__all__ = ["REGISTRY_CONTENT_TYPE", "RegistryRoutes"]

REGISTRY_CONTENT_TYPE: Final = "application/vnd.schemaregistry.v1+json"
#: Schemas evolve backward and forward compatibly against every earlier version.
COMPATIBILITY_LEVEL: Final = "FULL_TRANSITIVE"
MAX_VERSION: Final = 2**31 - 1

SUBJECT_NOT_FOUND: Final = 40401
VERSION_NOT_FOUND: Final = 40402
SCHEMA_NOT_FOUND: Final = 40403
INVALID_VERSION: Final = 42202

_ID_PARAM: Final = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "Static schema id (the 4 bytes after the magic byte of each message).",
    "schema": {"type": "integer"},
}
_SUBJECT_PARAM: Final = {
    "name": "subject",
    "in": "path",
    "required": True,
    "description": "Subject name, e.g. runstream.events-value.",
    "schema": {"type": "string"},
}
_VERSION_PARAM: Final = {
    "name": "version",
    "in": "path",
    "required": True,
    "description": 'Version number (1, 2, …), "latest" or -1 (latest).',
    "schema": {"oneOf": [{"type": "integer"}, {"type": "string", "enum": ["latest"]}]},
}
_ERROR_SCHEMA: Final = {
    "type": "object",
    "required": ["error_code", "message"],
    "properties": {"error_code": {"type": "integer"}, "message": {"type": "string"}},
}
_SCHEMA_STRING: Final = {
    "type": "object",
    "required": ["schema"],
    "properties": {"schema": {"type": "string", "description": "The schema as JSON text."}},
}
_SUBJECT_VERSION: Final = {
    "type": "object",
    "required": ["subject", "version", "id", "schema"],
    "properties": {
        "subject": {"type": "string"},
        "version": {"type": "integer"},
        "id": {"type": "integer"},
        "schema": {"type": "string", "description": "The schema as JSON text."},
    },
}


_SUBJECT_AND_VERSION: Final = {
    "type": "object",
    "required": ["subject", "version"],
    "properties": {"subject": {"type": "string"}, "version": {"type": "integer"}},
}
_ANY_JSON: Final = {"description": "The schema itself (a JSON document)."}
_CONFIG: Final = {
    "type": "object",
    "required": ["compatibilityLevel"],
    "properties": {"compatibilityLevel": {"type": "string"}},
}
_PREFIX_PARAM: Final = {
    "name": "subjectPrefix",
    "in": "query",
    "required": False,
    "description": "Only subjects starting with this prefix.",
    "schema": {"type": "string"},
}


def _content(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {REGISTRY_CONTENT_TYPE: {"schema": schema}}


def _spec(
    path: str,
    handler: RouteHandler,
    operation_id: str,
    summary: str,
    ok_schema: Mapping[str, Any],
    params: Sequence[Mapping[str, Any]] = (),
    errors: Mapping[int, str] | None = None,
) -> RouteSpec:
    errors = errors or {}
    extra: dict[str, Any] = {"tags": ["schema registry"]}
    if params:
        extra["parameters"] = list(params)
    return RouteSpec(
        method="GET",
        path=path,
        handler=handler,
        operation_id=operation_id,
        summary=summary,
        responses={200: "OK.", **errors},
        response_content={200: _content(ok_schema),
                          **{status: _content(_ERROR_SCHEMA) for status in errors}},
        extra=extra,
    )


def registry_response(body: Any, *, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(body, separators=(",", ":")),
        status=status,
        content_type=REGISTRY_CONTENT_TYPE,
    )


def registry_error(status: int, error_code: int, message: str) -> web.Response:
    return registry_response({"error_code": error_code, "message": message}, status=status)


class RegistryRoutes:
    """Handlers over a fixed list of schema versions (the manifest's by default)."""

    def __init__(self, versions: Sequence[SchemaVersion] | None = None) -> None:
        self._versions = tuple(schema_versions() if versions is None else versions)
        self._by_id: dict[int, SchemaVersion] = {}
        self._by_subject: dict[str, list[SchemaVersion]] = {}
        for v in sorted(self._versions, key=lambda v: (v.subject, v.version)):
            # One id may serve several subjects (Confluent dedups identical schemas).
            self._by_id.setdefault(v.schema_id, v)
            self._by_subject.setdefault(v.subject, []).append(v)

    def specs(self) -> list[RouteSpec]:
        bad_id = {404: "Unknown schema id (error_code 40403)."}
        bad_subject = {404: "Unknown subject (error_code 40401)."}
        bad_version = {404: "Unknown subject (40401) or version (40402).",
                       422: "Malformed version (error_code 42202)."}
        strings = {"type": "array", "items": {"type": "string"}}
        return [
            _spec("/schemas/ids/{id}", self.schema_by_id, "registryGetSchemaById",
                  "The schema with this id (Confluent Schema Registry).",
                  _SCHEMA_STRING, [_ID_PARAM], bad_id),
            _spec("/schemas/ids/{id}/schema", self.raw_schema_by_id, "registryGetRawSchemaById",
                  "The schema with this id, as a JSON document.", _ANY_JSON, [_ID_PARAM], bad_id),
            _spec("/schemas/ids/{id}/versions", self.versions_by_id,
                  "registryGetSchemaVersionsById",
                  "Every (subject, version) that uses this schema id.",
                  {"type": "array", "items": _SUBJECT_AND_VERSION}, [_ID_PARAM], bad_id),
            _spec("/schemas/types", self.schema_types, "registryGetSchemaTypes",
                  "Schema types this registry serves.", strings),
            _spec("/subjects", self.subjects, "registryListSubjects", "Every subject.",
                  strings, [_PREFIX_PARAM]),
            _spec("/subjects/{subject}/versions", self.subject_versions,
                  "registryListSubjectVersions", "The versions of a subject.",
                  {"type": "array", "items": {"type": "integer"}}, [_SUBJECT_PARAM],
                  bad_subject),
            _spec("/subjects/{subject}/versions/{version}", self.subject_version,
                  "registryGetSubjectVersion", "One version of a subject.", _SUBJECT_VERSION,
                  [_SUBJECT_PARAM, _VERSION_PARAM], bad_version),
            _spec("/subjects/{subject}/versions/{version}/schema", self.raw_subject_version,
                  "registryGetSubjectVersionSchema", "One version's schema, as a JSON document.",
                  _ANY_JSON, [_SUBJECT_PARAM, _VERSION_PARAM], bad_version),
            _spec("/config", self.config, "registryGetConfig",
                  "Global compatibility level (schemas only evolve fully transitively).",
                  _CONFIG),
        ]  # fmt: skip

    # -- handlers ---------------------------------------------------------------------

    async def schema_by_id(self, request: web.Request) -> web.StreamResponse:
        found = self._find_id(request)
        if isinstance(found, web.Response):
            return found
        return registry_response({"schema": found.schema_text})

    async def raw_schema_by_id(self, request: web.Request) -> web.StreamResponse:
        found = self._find_id(request)
        if isinstance(found, web.Response):
            return found
        return _raw_schema(found)

    async def versions_by_id(self, request: web.Request) -> web.StreamResponse:
        found = self._find_id(request)
        if isinstance(found, web.Response):
            return found
        uses = [{"subject": v.subject, "version": v.version}
                for v in self._versions if v.schema_id == found.schema_id]
        return registry_response(uses)

    async def schema_types(self, request: web.Request) -> web.StreamResponse:
        return registry_response(["AVRO"])

    async def subjects(self, request: web.Request) -> web.StreamResponse:
        prefix = request.query.get("subjectPrefix", "")
        return registry_response([s for s in self._by_subject if s.startswith(prefix)])

    async def subject_versions(self, request: web.Request) -> web.StreamResponse:
        subject = request.match_info["subject"]
        versions = self._by_subject.get(subject)
        if versions is None:
            return _subject_not_found(subject)
        return registry_response([v.version for v in versions])

    async def subject_version(self, request: web.Request) -> web.StreamResponse:
        found = self._find_version(request)
        if isinstance(found, web.Response):
            return found
        return registry_response({"subject": found.subject, "version": found.version,
                                  "id": found.schema_id, "schema": found.schema_text})

    async def raw_subject_version(self, request: web.Request) -> web.StreamResponse:
        found = self._find_version(request)
        if isinstance(found, web.Response):
            return found
        return _raw_schema(found)

    async def config(self, request: web.Request) -> web.StreamResponse:
        return registry_response({"compatibilityLevel": COMPATIBILITY_LEVEL})

    # -- lookups ----------------------------------------------------------------------

    def _find_id(self, request: web.Request) -> SchemaVersion | web.Response:
        raw = request.match_info["id"]
        try:
            schema_id = int(raw)
        except ValueError:
            schema_id = None
        found = None if schema_id is None else self._by_id.get(schema_id)
        if found is None:
            return registry_error(404, SCHEMA_NOT_FOUND, f"Schema {raw[:64]} not found")
        return found

    def _find_version(self, request: web.Request) -> SchemaVersion | web.Response:
        subject = request.match_info["subject"]
        raw = request.match_info["version"]
        version = parse_version(raw)
        if version is None:
            return registry_error(
                422,
                INVALID_VERSION,
                f"The specified version '{raw[:64]}' is not a valid version id. Allowed "
                f'values are between [1, {MAX_VERSION}] and the string "latest"',
            )
        versions = self._by_subject.get(subject)
        if versions is None:
            return _subject_not_found(subject)
        if version == "latest":
            return versions[-1]
        for v in versions:
            if v.version == version:
                return v
        return registry_error(404, VERSION_NOT_FOUND, f"Version {version} not found.")


def parse_version(raw: str) -> int | str | None:
    """``"latest"``/``"-1"`` → ``"latest"``; ``"1"``…``"2147483647"`` → int; else None."""
    if raw == "latest":
        return "latest"
    # isdecimal would accept non-ASCII digits; Confluent takes only ASCII integers.
    digits = raw.removeprefix("-")
    if not digits.isascii() or not digits.isdigit() or len(digits) > 10:
        return None
    number = int(raw)
    if number == -1:
        return "latest"
    return number if 1 <= number <= MAX_VERSION else None


def _subject_not_found(subject: str) -> web.Response:
    return registry_error(404, SUBJECT_NOT_FOUND, f"Subject '{subject[:256]}' not found.")


def _raw_schema(version: SchemaVersion) -> web.Response:
    return web.Response(text=version.schema_text, content_type=REGISTRY_CONTENT_TYPE)
