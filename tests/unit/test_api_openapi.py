"""/v1/openapi.json is built from the same route specs the router serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from ingest.api.app import create_app, route_specs
from ingest.api.blobstore import BlobStore
from ingest.api.openapi import build_openapi, path_parameters
from ingest.settings import Secret


def _app(token: Secret | None = None) -> web.Application:
    # BlobStore does no I/O until used, so nothing touches this path.
    store = BlobStore(root=Path("/nonexistent/blobs"))
    return create_app(blob_store=store, registry=CollectorRegistry(), token=token)


def _document(app: web.Application, *, auth_enabled: bool) -> dict[str, Any]:
    return build_openapi(route_specs(app), version="test", auth_enabled=auth_enabled)


def test_document_lists_exactly_the_routes_the_router_serves() -> None:
    app = _app()
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }
    documented = {
        (method, path)
        for path, operations in _document(app, auth_enabled=False)["paths"].items()
        for method in operations
    }
    assert documented == served
    assert ("put", "/v1/blobs/{sha256}") in served
    assert ("get", "/v1/openapi.json") in served


def test_every_path_placeholder_is_a_documented_parameter() -> None:
    for path, operations in _document(_app(), auth_enabled=False)["paths"].items():
        for operation in operations.values():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(path_parameters(path)), (path, operation["operationId"])


def test_operation_ids_are_unique() -> None:
    ids = [
        operation["operationId"]
        for operations in _document(_app(), auth_enabled=False)["paths"].values()
        for operation in operations.values()
    ]
    assert len(ids) == len(set(ids))


def test_with_auth_probes_stay_public_and_the_rest_document_401_403() -> None:
    app = _app(Secret("t"))
    doc = _document(app, auth_enabled=True)
    assert doc["security"] == [{"bearer": []}]
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    assert doc["paths"]["/readyz"]["get"]["security"] == []
    put = doc["paths"]["/v1/blobs/{sha256}"]["put"]
    assert "security" not in put
    assert {"401", "403", "413"} <= put["responses"].keys()


def test_without_auth_no_security_is_claimed() -> None:
    doc = _document(_app(), auth_enabled=False)
    assert "security" not in doc
    assert "401" not in doc["paths"]["/v1/blobs/{sha256}"]["put"]["responses"]


def test_path_parameters() -> None:
    assert path_parameters("/v1/runs/{run_id}/metrics/{name}") == ["run_id", "name"]
    assert path_parameters("/healthz") == []


def _read_app() -> web.Application:
    # With a database the /v1 read routes are served; nothing connects until startup.
    store = BlobStore(root=Path("/nonexistent/blobs"))
    return create_app(blob_store=store, registry=CollectorRegistry(),
                      db_dsn=Secret("postgresql://nobody@127.0.0.1:1/none"))


def test_read_routes_are_documented_as_served() -> None:
    app = _read_app()
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }
    doc = _document(app, auth_enabled=False)
    documented = {(m, path) for path, ops in doc["paths"].items() for m in ops}
    assert documented == served
    assert ("get", "/v1/runs/{run_id}/files/{name}") in documented
    assert ("get", "/v1/runs/{run_id}/metrics/{name}") in documented
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(path_parameters(path)), (path, operation["operationId"])


def test_every_schema_reference_resolves() -> None:
    doc = _document(_read_app(), auth_enabled=False)
    components = doc["components"]["schemas"]
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(doc["paths"])
    walk(components)
    assert {"RunSummary", "RunDetails", "QueueState", "Value"} <= set(components)
    for ref in refs:
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in components, ref
