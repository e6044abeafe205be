"""``/v1/models…``: a registry of versioned models (Azure ML v1 ``run.register_model``,
``Model.register``, ``Model(ws, name, version)``, ``Model.list``, ``model.download``).

Registration (``POST /v1/models``) is a direct, transactional write, not an event: how
versions stay exact under concurrency and retries stay idempotent (``registration_id``)
is ``ingest/db/models.py``'s docstring. A model's files come from one of two places:

- a run (``run_id``): ``path`` names one of the run's files (``outputs/model.pkl``;
  ``./outputs/x`` reads as ``outputs/x``) or a folder (``outputs/model``: every file under
  ``outputs/model/``). Files are recorded relative to the parent of ``path``
  (``model.pkl``; ``model/a.bin``) with the digest and size the run stored, and the model
  takes the run's workspace and experiment. A run of a workspace the token does not
  grant answers 404 ``no run '…'``, exactly like a missing run (``/v1/runs/{run_id}``).
- local files (``files``) the SDK uploaded first with ``PUT /v1/blobs/{sha256}``: with a
  workspace-scoped token each blob must have been uploaded by the model's workspace (the
  blob store's claims, ``routes/blobs.py``), so a digest is no capability across
  workspaces; with the admin token (or auth off) it must be stored.

A request acting in one workspace (registering local files, reading a model by name)
names it in the ``workspace`` field or query parameter, else ``X-Runstream-Workspace``,
else it is the token's only workspace, else ``default`` (``auth.acting_workspace``).
Listings cover every granted workspace (``?workspace=`` narrows them), newest first, in
keyset pages whose cursor holds (created_at, workspace, name, version) of the last model.
A model's file downloads like a run's (``routes/runs.serve_artifact``).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg
from aiohttp import hdrs, web

from ingest.api.auth import acting_workspace, forbidden_workspace, grant_of
from ingest.api.blobstore import BlobStore, is_valid_digest
from ingest.api.http import RouteSpec
from ingest.api.params import (
    CURSOR_PARAMETER,
    LIMIT_PARAMETER,
    UNAVAILABLE,
    bad_request,
    bool_param,
    cursor_param,
    encode_cursor,
    json_body,
    json_ok,
    limit_param,
    not_found,
    path_param,
    query_parameter,
    storable,
    str_param,
)
from ingest.api.routes.runs import serve_artifact
from ingest.api.shapes import model_document, ref, schemas_for
from ingest.db import models
from ingest.db.reads import ReadStore
from ingest.db.values import dumps, iso

__all__ = ["DEFAULT_WORKSPACE", "ModelRoutes"]

#: Where a request that names no workspace acts, with the admin token (the SDK's default).
DEFAULT_WORKSPACE: Final = "default"
MAX_NAME_CHARS: Final = 255
MAX_PATH_BYTES: Final = 1024
MAX_TEXT_BYTES: Final = 8 * 1024
MAX_MAP_ENTRIES: Final = 100
MAX_FILES: Final = 1000
#: Run files named in the answer to a path that matches none (Azure's ModelPathNotFound).
LISTED_RUN_FILES: Final = 20
MAX_VERSION: Final = 2**31 - 1

#: Azure's model-name rule: letters, digits, '-', '_', '.', starting with a letter or digit.
_MODEL_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_VERSION: Final = re.compile(r"[0-9]{1,10}")
_FIELDS: Final = frozenset({
    "name", "path", "run_id", "files", "tags", "properties", "description",
    "registration_id", "workspace",
})
_FILE_FIELDS: Final = frozenset({"name", "sha256", "size_bytes"})

_NAME_SCHEMA: Final = {"type": "string", "pattern": f"^{_MODEL_NAME.pattern}$"}
_STRING: Final = {"type": "string", "minLength": 1}
_STRING_MAP: Final = {"type": "object", "maxProperties": MAX_MAP_ENTRIES,
                      "additionalProperties": {"type": "string"}}
_REGISTRATION: Final = {
    "type": "object",
    "required": ["name", "path", "registration_id"],
    "additionalProperties": False,
    "properties": {
        "name": {**_NAME_SCHEMA, "description": "1-255 of A-Z a-z 0-9 _ . -, starting with a "
                 "letter or digit."},
        "path": {**_STRING, "description": "With run_id: one of the run's files or a folder of "
                 "them; else the local path the files came from."},
        "run_id": {"type": ["string", "null"], "description": "Register the run's files."},
        "files": {
            "type": "array", "minItems": 1, "maxItems": MAX_FILES,
            "description": "Without run_id: files already uploaded with PUT /v1/blobs/{sha256}.",
            "items": {
                "type": "object", "required": ["name", "sha256"], "additionalProperties": False,
                "properties": {
                    "name": {**_STRING, "description": "A relative POSIX path."},
                    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    "size_bytes": {"type": "integer", "minimum": 0},
                },
            },
        },
        "tags": _STRING_MAP,
        "properties": _STRING_MAP,
        "description": {"type": ["string", "null"]},
        "registration_id": {"type": "string", "format": "uuid",
                            "description": "Fixed per registration: a retry returns the first."},
        "workspace": {**_STRING, "description": "Without run_id: the model's workspace."},
    },
}
_WORKSPACE_PARAMETER: Final = query_parameter(
    "workspace", "The model's workspace (default: X-Runstream-Workspace, else the token's "
    "only workspace, else 'default').", _STRING,
)
_MODEL_PARAMETERS: Final = [
    {"name": "name", "in": "path", "required": True, "description": "The model's name.",
     "schema": _NAME_SCHEMA},
    _WORKSPACE_PARAMETER,
]
_VERSION_PARAMETER: Final = {
    "name": "version", "in": "path", "required": True, "description": "1, 2, 3…",
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_VERSION},
}
_FILE_NAME_PARAMETER: Final = {
    "name": "file_name", "in": "path", "required": True,
    "description": "One of the version's file names (its '/' need no escaping).",
    "schema": _STRING,
}
_LIST_PARAMETERS: Final = [
    query_parameter("name", "Only versions of this model.", _NAME_SCHEMA),
    query_parameter("run_id", "Only models registered from this run.", _STRING),
    query_parameter("workspace", "Only models of this workspace.", _STRING),
    query_parameter("latest", "true: only each model's highest version.",
                    {"type": "string", "enum": ["true", "false"]}),
    LIMIT_PARAMETER,
    CURSOR_PARAMETER,
]


def _json(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


@dataclass(frozen=True, slots=True)
class _GivenFile:
    name: str
    sha256: str
    size_bytes: int | None


@dataclass(frozen=True, slots=True)
class _Registration:
    """A validated ``POST /v1/models`` body (nothing looked up yet)."""

    name: str
    path: str
    registration_id: uuid.UUID
    run_id: str | None
    workspace: str | None
    files: tuple[_GivenFile, ...]
    tags: dict[str, str]
    properties: dict[str, str]
    description: str | None


class ModelRoutes:
    def __init__(self, *, reads: ReadStore, blob_store: BlobStore) -> None:
        self._reads = reads
        self._blobs = blob_store

    def specs(self) -> list[RouteSpec]:
        model = ref("Model")
        return [
            RouteSpec(
                method="POST", path="/v1/models", handler=self.register,
                operation_id="registerModel",
                summary="Register the next version of a model: a run's file or folder, or "
                "uploaded blobs.",
                responses={**UNAVAILABLE, 201: "A new version.",
                           200: "This registration_id was registered before: that version.",
                           400: "A bad field, a path matching none of the run's files, or a "
                           "blob the workspace has not uploaded.",
                           403: "The token does not grant the workspace.",
                           404: "No such run.",
                           409: "This registration_id registered another model.",
                           413: "The body is over the request size limit."},
                response_content={200: _json(model), 201: _json(model)},
                extra={"requestBody": {"required": True, "content": _json(_REGISTRATION)}},
                schemas=schemas_for("Model"),
            ),
            RouteSpec(
                method="GET", path="/v1/models", handler=self.list_models,
                operation_id="listModels",
                summary="Model versions, newest first (latest=true: each model's highest).",
                responses={**UNAVAILABLE, 200: "A page of models.", 400: "A bad parameter.",
                           403: "The token does not grant the workspace."},
                response_content={200: _json(ref("ModelPage"))},
                extra={"parameters": _LIST_PARAMETERS}, schemas=schemas_for("ModelPage"),
            ),
            RouteSpec(
                method="GET", path="/v1/models/{name}", handler=self.latest,
                operation_id="getModel", summary="A model's latest version.",
                responses={**UNAVAILABLE, 200: "The latest version.",
                           400: "A token granting several workspaces names none.",
                           403: "The token does not grant the workspace.",
                           404: "No such model."},
                response_content={200: _json(model)},
                extra={"parameters": _MODEL_PARAMETERS}, schemas=schemas_for("Model"),
            ),
            RouteSpec(
                method="GET", path="/v1/models/{name}/versions/{version}", handler=self.version,
                operation_id="getModelVersion", summary="One version of a model.",
                responses={**UNAVAILABLE, 200: "The version.",
                           400: "A token granting several workspaces names none.",
                           403: "The token does not grant the workspace.",
                           404: "No such model or version."},
                response_content={200: _json(model)},
                extra={"parameters": [*_MODEL_PARAMETERS, _VERSION_PARAMETER]},
                schemas=schemas_for("Model"),
            ),
            RouteSpec(
                method="GET", path="/v1/models/{name}/versions/{version}/files/{file_name:.+}",
                handler=self.file, operation_id="downloadModelFile",
                summary="The bytes of one of a model version's files.",
                responses={**UNAVAILABLE, 200: "The file's bytes.",
                           400: "A token granting several workspaces names none.",
                           403: "The token does not grant the workspace.",
                           404: "No such model, version, file, or stored bytes."},
                response_content={200: {"*/*": {"schema": {"type": "string",
                                                           "format": "binary"}}}},
                extra={"parameters": [*_MODEL_PARAMETERS, _VERSION_PARAMETER,
                                      _FILE_NAME_PARAMETER]},
            ),
        ]

    # -- handlers -----------------------------------------------------------------------------

    async def register(self, request: web.Request) -> web.StreamResponse:
        given = _registration(await json_body(request))
        if given.run_id is not None:
            model = await self._from_run(request, given, given.run_id)
        else:
            model = await self._from_blobs(request, given)
        row, created = await self._reads.call(models.register, model)
        if (row["workspace"], row["name"]) != (model.workspace, model.name):
            raise web.HTTPConflict(
                text=f"registration_id {given.registration_id} registered another model"
            )
        document = model_document(row)
        headers = {hdrs.LOCATION: document["url"]} if created else None
        return web.Response(text=dumps(document), status=201 if created else 200,
                            content_type="application/json", headers=headers)

    async def list_models(self, request: web.Request) -> web.StreamResponse:
        grant = grant_of(request)
        workspace = str_param(request, "workspace")
        if workspace is not None and not grant.allows(workspace):
            raise forbidden_workspace(workspace)
        limit = limit_param(request)
        after = cursor_param(request, "models")
        where = models.ModelFilter(
            workspaces=grant.sorted(), workspace=workspace, name=str_param(request, "name"),
            run_id=str_param(request, "run_id"), latest_only=bool_param(request, "latest"),
            after=None if after is None else _keyset(after),
        )
        rows = await self._reads.call(models.models_page, where, limit + 1)
        page, more = rows[:limit], len(rows) > limit
        next_cursor = None
        if more:
            last = page[-1]
            next_cursor = encode_cursor("models", [iso(last["created_at"]), last["workspace"],
                                                   last["name"], last["version"]])
        return json_ok({"models": [model_document(r) for r in page], "next_cursor": next_cursor})

    async def latest(self, request: web.Request) -> web.StreamResponse:
        workspace, name = _addressed(request)
        row = await self._reads.call(models.latest_version, workspace, name)
        if row is None:
            raise not_found(f"no model {name!r}")
        return json_ok(model_document(row))

    async def version(self, request: web.Request) -> web.StreamResponse:
        return json_ok(model_document(await self._version(request)))

    async def file(self, request: web.Request) -> web.StreamResponse:
        row = await self._version(request)
        file_name = request.match_info["file_name"]
        found = next((f for f in model_document(row)["files"] if f["name"] == file_name), None)
        if found is None:
            raise not_found(f"version {row['version']} of model {row['name']!r} has no file "
                            f"{file_name[:200]!r}")
        return await serve_artifact(request, self._blobs, name=file_name,
                                    digest=found["sha256"], content_type=None)

    # -- helpers ------------------------------------------------------------------------------

    async def _version(self, request: web.Request) -> asyncpg.Record:
        workspace, name = _addressed(request)
        text = request.match_info["version"]
        version = int(text) if _VERSION.fullmatch(text) else 0
        row = await self._reads.call(models.model_version, workspace, name, version) if (
            1 <= version <= MAX_VERSION) else None
        if row is not None:
            return row
        if not await self._reads.call(models.model_exists, workspace, name):
            raise not_found(f"no model {name!r}")
        raise not_found(f"no version {text[:20]} of model {name!r}")

    async def _from_run(self, request: web.Request, given: _Registration,
                        run_id: str) -> models.NewModel:
        origin = await self._reads.call(models.run_origin, run_id)
        if origin is None or not grant_of(request).allows(origin["workspace"]):
            raise not_found(f"no run {run_id[:80]!r}")  # as auth.py answers for /v1/runs/{id}
        if given.workspace is not None and given.workspace != origin["workspace"]:
            raise bad_request(f"field 'workspace' is {given.workspace[:80]!r}, but run "
                              f"{run_id!r} is in workspace {origin['workspace']!r}")
        path = _run_path(given.path)
        rows = await self._reads.call(models.run_files_under, run_id, path)
        exact = [r for r in rows if r["name"] == path]
        matched = exact or rows
        if not matched:
            names = await self._reads.call(models.run_file_names, run_id, LISTED_RUN_FILES + 1)
            raise bad_request(_path_not_found(path, run_id, names))
        parent = path.rpartition("/")[0]
        skip = len(parent) + 1 if parent else 0
        return models.NewModel(
            workspace=origin["workspace"], name=given.name, path=path,
            files=tuple(models.ModelFile(r["name"][skip:], r["sha256"], int(r["size_bytes"]))
                        for r in matched),
            registration_id=given.registration_id, run_id=run_id,
            experiment=origin["experiment"], tags=given.tags, properties=given.properties,
            description=given.description,
        )

    async def _from_blobs(self, request: web.Request,
                          given: _Registration) -> models.NewModel:
        workspace = acting_workspace(request, given.workspace) or DEFAULT_WORKSPACE
        # The admin token may use any stored blob; a scoped one only its workspace's uploads.
        claimant = None if grant_of(request).admin else workspace
        files = await asyncio.to_thread(self._stored, given.files, claimant)
        return models.NewModel(
            workspace=workspace, name=given.name, path=given.path, files=files,
            registration_id=given.registration_id, tags=given.tags,
            properties=given.properties, description=given.description,
        )

    def _stored(self, files: Sequence[_GivenFile],
                claimant: str | None) -> tuple[models.ModelFile, ...]:
        """The files with their stored sizes; 400 naming the first digest that is not
        stored (or not uploaded by ``claimant``). Blocking (stats)."""
        out = []
        for f in files:
            info = self._blobs.stat(f.sha256)
            if info is None or (claimant is not None
                                and not self._blobs.claimed(f.sha256, (claimant,))):
                by = "" if claimant is None else f" by workspace {claimant!r}"
                raise bad_request(f"file {f.name!r}: no blob with sha256 {f.sha256} was uploaded"
                                  f"{by}; upload it first with PUT /v1/blobs/{f.sha256}")
            if f.size_bytes is not None and f.size_bytes != info.size_bytes:
                raise bad_request(f"file {f.name!r}: size_bytes is {f.size_bytes}, but blob "
                                  f"{f.sha256} has {info.size_bytes} bytes")
            out.append(models.ModelFile(f.name, f.sha256, info.size_bytes))
        return tuple(sorted(out, key=lambda m: m.name))


# --- request parsing (400s name the field) ----------------------------------------------------


def _registration(body: dict[str, Any]) -> _Registration:
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise bad_request(
            f"unknown field {unknown[0][:80]!r}; fields: {', '.join(sorted(_FIELDS))}"
        )
    name = body.get("name")
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise bad_request("field 'name' must be 1-255 letters, digits, '_', '.' or '-', "
                          "starting with a letter or digit")
    run_id = _optional_text(body, "run_id", MAX_PATH_BYTES)
    if run_id == "":
        raise bad_request("field 'run_id' must not be empty")
    files = body.get("files")
    if run_id is not None and files is not None:
        raise bad_request("field 'files' is for local files: give run_id or files, not both")
    if run_id is None and files is None:
        raise bad_request("field 'files' is required without run_id")
    return _Registration(
        name=name,
        path=_path(body.get("path")),
        registration_id=_registration_id(body.get("registration_id")),
        run_id=run_id,
        workspace=_workspace(body.get("workspace")),
        files=() if files is None else _files(files),
        tags=_string_map(body, "tags"),
        properties=_string_map(body, "properties"),
        description=_optional_text(body, "description", MAX_TEXT_BYTES),
    )


def _path(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise bad_request("field 'path' must be a non-empty string")
    _check_text(value, "path", MAX_PATH_BYTES)
    if _CONTROL.search(value):
        raise bad_request("field 'path' contains a control character")
    return value


def _run_path(path: str) -> str:
    """A path into a run's files, normalised: ``./outputs/x/`` → ``outputs/x``."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise bad_request(f"field 'path' must stay inside the run's files, got {path[:200]!r}")
    if not parts:
        raise bad_request("field 'path' must name a file or folder of the run")
    return "/".join(parts)


def _path_not_found(path: str, run_id: str, names: list[str]) -> str:
    if not names:
        return f"could not locate path {path!r}: run {run_id!r} has no files"
    shown = ", ".join(repr(n) for n in names[:LISTED_RUN_FILES])
    more = ", …" if len(names) > LISTED_RUN_FILES else ""
    return (f"could not locate path {path!r} in the files of run {run_id!r}: "
            f"[{shown}{more}]")


def _registration_id(value: Any) -> uuid.UUID:
    problem = bad_request("field 'registration_id' must be a UUID (fixed per registration, so "
                          "a retry returns the first)")
    if not isinstance(value, str):
        raise problem
    try:
        return uuid.UUID(value)
    except ValueError:
        raise problem from None


def _workspace(value: Any) -> str | None:
    if value is None:
        return None
    if (not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME_CHARS
            or _CONTROL.search(value) or not storable(value)):
        raise bad_request("field 'workspace' must be 1-255 characters, no control characters")
    return value


def _files(value: Any) -> tuple[_GivenFile, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_FILES:
        raise bad_request(f"field 'files' must be a list of 1 to {MAX_FILES} files")
    out: list[_GivenFile] = []
    for i, item in enumerate(value):
        what = f"files[{i}]"
        if not isinstance(item, dict) or not set(item) <= _FILE_FIELDS:
            raise bad_request(f"field {what!r} must be an object with name, sha256 and "
                              "optionally size_bytes")
        name = _file_name(item.get("name"), f"{what}.name")
        digest, size = item.get("sha256"), item.get("size_bytes")
        if not isinstance(digest, str) or not is_valid_digest(digest):
            raise bad_request(f"field '{what}.sha256' must be 64 lowercase hex characters")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int)
                                 or size < 0):
            raise bad_request(f"field '{what}.size_bytes' must be an integer >= 0")
        out.append(_GivenFile(name, digest, size))
    names = [f.name for f in out]
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise bad_request(f"field 'files' names {duplicate!r} twice")
    return tuple(out)


def _file_name(value: Any, what: str) -> str:
    """A relative POSIX path, as a run's artifact names are."""
    if not isinstance(value, str) or not value:
        raise bad_request(f"field {what!r} must be a non-empty string")
    _check_text(value, what, MAX_PATH_BYTES)
    if (value.startswith("/") or "\\" in value or _CONTROL.search(value)
            or any(p in ("", ".", "..") for p in value.split("/"))):
        raise bad_request(f"field {what!r} must be a relative POSIX path without '..', '.', "
                          f"empty parts or control characters, got {value[:200]!r}")
    return value


def _string_map(body: dict[str, Any], field: str) -> dict[str, str]:
    value = body.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"field {field!r} must be an object of strings")
    if len(value) > MAX_MAP_ENTRIES:
        raise bad_request(f"field {field!r} has {len(value)} entries, over {MAX_MAP_ENTRIES}")
    for key, item in value.items():
        if (not 1 <= len(key) <= MAX_NAME_CHARS or _CONTROL.search(key)
                or not storable(key)):
            raise bad_request(f"field {field!r}: key {key[:80]!r} must be 1-255 characters, "
                              "no control characters")
        if not isinstance(item, str):
            raise bad_request(f"field {field!r}: the value of {key!r} must be a string")
        _check_text(item, f"{field}.{key}", MAX_TEXT_BYTES)
    return dict(value)


def _optional_text(body: dict[str, Any], field: str, max_bytes: int) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"field {field!r} must be a string")
    _check_text(value, field, max_bytes)
    return value


def _check_text(value: str, what: str, max_bytes: int) -> None:
    if not storable(value):
        raise bad_request(f"field {what!r} contains NUL or invalid characters")
    if len(value) * 4 > max_bytes and (size := len(value.encode())) > max_bytes:
        raise bad_request(f"field {what!r} is {size} bytes of UTF-8, over {max_bytes}")


# --- addressing and cursors -------------------------------------------------------------------


def _addressed(request: web.Request) -> tuple[str, str]:
    """(workspace, name) of a model addressed by path; a name no model can have is a 404."""
    workspace = acting_workspace(request, str_param(request, "workspace")) or DEFAULT_WORKSPACE
    name = path_param(request, "name", "model")
    if not _MODEL_NAME.fullmatch(name):
        raise not_found(f"no model {name[:80]!r}")
    return workspace, name


def _keyset(values: list[Any]) -> tuple[datetime, str, str, int]:
    problem = bad_request("parameter 'cursor' is not a cursor of this listing")
    if (len(values) != 4 or not all(isinstance(v, str) for v in values[:3])
            or type(values[3]) is not int or not 1 <= values[3] <= MAX_VERSION):
        raise problem
    try:
        created_at = datetime.fromisoformat(values[0])
        if created_at.tzinfo is None:
            raise problem
        created_at = created_at.astimezone(UTC)
    except (ValueError, OverflowError):
        raise problem from None
    return created_at, values[1], values[2], values[3]

