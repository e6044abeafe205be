"""``Model``: versioned models in the workspace's registry (``/v1/models``), as in Azure ML.

A model version points at files by their SHA-256 (the blob store's content addresses), so
a version never changes under you. ``run.register_model`` registers files a run uploaded
(``outputs/...``); ``Model.register`` uploads local files first. Registration is one
transactional write of the API: versions count 1, 2, 3… per name, and a retried request
(same ``registration_id``) answers the version it already made — never a second one.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ._client import file_path, segment
from ._display import DOCS_URL, html_table, link
from ._errors import ApiError
from ._session import VISIBLE_POLL_S, Session

if TYPE_CHECKING:
    from ._workspace import Workspace

__all__ = ["Model"]


class Model:
    """One version of a registered model.

    ``Model(workspace, name, version=None)`` fetches it (the latest version when
    ``version`` is None; ``id="name:version"`` works too); ``Model.register`` and
    ``run.register_model`` make a new version; ``Model.list`` lists them.
    """

    def __init__(
        self,
        workspace: Workspace,
        name: str | None = None,
        id: str | None = None,
        tags: object = None,
        properties: object = None,
        version: int | None = None,
        run_id: str | None = None,
        model_framework: object = None,
        expand: bool = True,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            raise TypeError(f"Model() takes no keyword arguments {sorted(kwargs)}")
        if id is not None:
            name, _, number = id.partition(":")
            version = int(number) if number else version
        if not name:
            raise ValueError("Model() needs name= (or id='name:version')")
        if tags is not None or properties is not None or run_id is not None:
            raise ValueError(
                "Model() finds a model by name and version; to search by tags, properties "
                "or run, use Model.list(workspace, ...)"
            )
        session = workspace._session
        path = f"/v1/models/{segment(name)}"
        if version is not None:
            path += f"/versions/{int(version)}"
        session.flush_for_read()
        self._load(workspace, session.api.get_json(path))

    @classmethod
    def _from_document(cls, workspace: Workspace, document: Mapping[str, Any]) -> Model:
        model = cls.__new__(cls)
        model._load(workspace, document)
        return model

    def _load(self, workspace: Workspace, document: Mapping[str, Any]) -> None:
        self.workspace = workspace
        self._session: Session = workspace._session
        self.name = str(document["name"])
        self.version = int(document["version"])
        self.id = f"{self.name}:{self.version}"
        self.run_id: str | None = document.get("run_id")
        self.experiment_name: str | None = document.get("experiment")
        self.path = str(document.get("path") or "")
        self.files: builtins.list[dict[str, Any]] = builtins.list(document.get("files") or [])
        self.tags: dict[str, str] = dict(document.get("tags") or {})
        self.properties: dict[str, str] = dict(document.get("properties") or {})
        self.description: str | None = document.get("description")
        self.created_time: str | None = document.get("created_at")
        self.url = f"{self._session.api.api_url}{document.get('url') or self._path()}"

    def _path(self) -> str:
        return f"/v1/models/{segment(self.name)}/versions/{self.version}"

    def __repr__(self) -> str:
        return (
            f"Model(workspace={self.workspace.name!r}, name={self.name!r}, "
            f"version={self.version}, run_id={self.run_id!r})"
        )

    def _repr_html_(self) -> str:
        return html_table({
            "Name": self.name,
            "Version": self.version,
            "Workspace": self.workspace.name,
            "Run": self.run_id,
            "Details Page": link(
                f"{self._session.api.api_url}/models/{segment(self.name)}", "Link to the studio"
            ),
            "Docs Page": link(DOCS_URL, "Link to Documentation"),
        })

    # ---- registering --------------------------------------------------------------------

    @staticmethod
    def register(
        workspace: Workspace,
        model_path: str | os.PathLike[str],
        model_name: str,
        tags: Mapping[str, str] | None = None,
        properties: Mapping[str, str] | None = None,
        description: str | None = None,
        datasets: object = None,
        model_framework: object = None,
        model_framework_version: object = None,
        child_paths: object = None,
        sample_input_dataset: object = None,
        sample_output_dataset: object = None,
        resource_configuration: object = None,
    ) -> Model:
        """Register a local file or folder as the next version of ``model_name`` (its
        bytes are uploaded first). The dataset, framework and resource arguments are
        accepted as in Azure ML and must be None: Runstream keeps only files, tags,
        properties and a description."""
        _only_files(datasets=datasets, model_framework=model_framework,
                    model_framework_version=model_framework_version, child_paths=child_paths,
                    sample_input_dataset=sample_input_dataset,
                    sample_output_dataset=sample_output_dataset,
                    resource_configuration=resource_configuration)
        root = Path(model_path)
        if root.is_file():
            sources = [(root.name, root)]
        elif root.is_dir():
            sources = [
                (f"{root.name}/{p.relative_to(root).as_posix()}", p)
                for p in sorted(root.rglob("*")) if p.is_file()
            ]
            if not sources:
                raise ValueError(f"model_path {str(root)!r} is an empty folder")
        else:
            raise ValueError(f"model_path {str(root)!r}: no such file or folder")
        api = workspace._session.api
        files = []
        for name, source in sources:
            digest = _sha256(source)
            api.put_file(f"/v1/blobs/{digest}", source)
            files.append({"name": name, "sha256": digest})
        return Model._register(workspace, {
            "name": model_name, "path": root.name, "files": files,
            "tags": dict(tags or {}), "properties": dict(properties or {}),
            "description": description,
        })

    @staticmethod
    def _register(
        workspace: Workspace, request: dict[str, Any], *, wait_for_run: str | None = None
    ) -> Model:
        """POST the registration (one id, so a retry never makes a second version); for a
        run this process logged into, wait (bounded) until its files are stored."""
        session = workspace._session
        session.flush_for_read()
        request = {**request, "registration_id": str(uuid.uuid4()), "workspace": workspace.name}
        deadline = time.monotonic() + session.options.read_flush_timeout_s
        while True:
            try:
                return Model._from_document(workspace, session.api.post_json("/v1/models", request))
            except ApiError as exc:
                waiting = wait_for_run is not None and wait_for_run in session.own_runs
                if not waiting or exc.status not in (400, 404) or time.monotonic() >= deadline:
                    raise
                time.sleep(VISIBLE_POLL_S)

    # ---- reading --------------------------------------------------------------------------

    @staticmethod
    def list(
        workspace: Workspace,
        name: str | None = None,
        tags: Mapping[str, str] | builtins.list[str] | None = None,
        properties: Mapping[str, str] | builtins.list[str] | None = None,
        run_id: str | None = None,
        latest: bool = False,
        dataset_id: object = None,
        expand: bool = True,
        page_count: int = 255,
        model_framework: object = None,
    ) -> builtins.list[Model]:
        """The workspace's model versions, newest first (``latest``: each name's highest
        version only), filtered by ``name``, ``run_id`` and the ``tags``/``properties``
        they carry (keys, or key → value)."""
        if dataset_id is not None or model_framework is not None:
            raise ValueError("Runstream models have no datasets or frameworks: filter by "
                             "name, run_id, tags or properties")
        params: builtins.list[tuple[str, str]] = [("workspace", workspace.name)]
        if name is not None:
            params.append(("name", name))
        if run_id is not None:
            params.append(("run_id", run_id))
        if latest:
            params.append(("latest", "true"))
        session = workspace._session
        session.flush_for_read()
        found = [
            Model._from_document(workspace, d)
            for d in session.api.pages("/v1/models", params, "models")
        ]
        return [m for m in found if _carries(m.tags, tags) and _carries(m.properties, properties)]

    def download(
        self, target_dir: str | os.PathLike[str] = ".", exist_ok: bool = False,
        exists_ok: bool | None = None,
    ) -> str:
        """Download the model's files into ``target_dir``; the path of the model (its file,
        or its folder). Each file's SHA-256 is checked. ``FileExistsError`` if a file is
        already there, unless ``exist_ok`` (Azure's older spelling ``exists_ok`` too)."""
        overwrite = exist_ok if exists_ok is None else exists_ok
        root = Path(target_dir)
        for entry in self.files:
            name = str(entry["name"])
            relative = PurePosixPath(name)
            if relative.is_absolute() or ".." in relative.parts:
                raise ApiError(200, f"model file name {name!r} is unsafe", what=self._path(),
                               retriable=False)
            target = root.joinpath(*relative.parts)
            if target.exists() and not overwrite:
                raise FileExistsError(f"{target} exists; pass exist_ok=True to replace it")
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as part:
                self._session.api.download(f"{self._path()}/files/{file_path(name)}", part)
            if _sha256(Path(part.name)) != entry["sha256"]:
                os.unlink(part.name)
                raise ApiError(200, f"model file {name!r} does not match its SHA-256",
                               what=self._path(), retriable=True)
            shutil.move(part.name, target)
        first = PurePosixPath(str(self.files[0]["name"])).parts[0] if self.files else ""
        return str(root / first)


def _only_files(**unused: object) -> None:
    given = sorted(k for k, v in unused.items() if v is not None)
    if given:
        raise ValueError(
            f"{', '.join(given)}: Runstream models keep files, tags, properties and a "
            "description only; leave these None"
        )


def _carries(
    have: Mapping[str, str], wanted: Mapping[str, str] | builtins.list[str] | None
) -> bool:
    if wanted is None:
        return True
    if isinstance(wanted, Mapping):
        return all(have.get(k) == v for k, v in wanted.items())
    return all(k in have for k in wanted)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
