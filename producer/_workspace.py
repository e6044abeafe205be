"""The three handles — ``Workspace`` → ``Experiment`` → ``Run`` — and every way to get one.

They construct each other: a workspace gets a run by id (``get_run``), an experiment starts,
submits and lists runs (``start_logging``, ``submit``, ``get_runs``; the HTTP of
submitting is ``_submit``), a run starts children (``child_run``),
finds its experiment when attached by id (``Run.attach``) or reopened for logging
(``Run.resume``, the reads behind it in ``_resume``) and builds its workspace from
the environment (``Run.get_context()``). So they share this module, the top of the SDK's
import graph: what a run handle does once open is ``_run.RunHandle``, what it needs from
its workspace is ``_session.Session``, and reading runs back is ``_reads``.

The SDK reads the environment in two places only, both here and both through
``EnvReader``: ``Workspace.from_env`` (with ``KafkaSecurity.from_env``) and
``Run.get_context``. Everything else takes keyword arguments. A workspace starts its
sender (thread, Kafka producer) lazily when its first run opens, never in the
constructor.
"""

from __future__ import annotations

import builtins
import difflib
import itertools
import logging
import os
import re
import secrets
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from ._buffer import Stream
from ._client import ApiClient, segment
from ._config import find_config, read_config
from ._display import DOCS_URL, html_table, link
from ._env import EnvReader, default_home
from ._errors import ApiError, ConfigError, NotFoundError, UnknownExperimentWarning
from ._kafka_security import KafkaSecurity
from ._model import Model, _only_files
from ._options import ProducerOptions
from ._reads import runs_query
from ._resume import resume_point
from ._run import RunHandle
from ._sender import ProducerStats
from ._session import DEFAULT_FLUSH_TIMEOUT_S, Session, TransportFactory
from ._submit import CANCEL_STATUS, cancel_run, restore_snapshot, snapshot_id, submission
from ._transport import KafkaTransport
from ._validate import (
    MAX_NAME_CHARS,
    MAX_RUN_EXPERIMENT_CHARS,
    Value,
    check_experiment_name,
    check_name,
    check_properties,
)

logger = logging.getLogger(__name__)

DEFAULT_WORKSPACE = "default"
#: How long ``Experiment.submit`` waits for the new run's first events to reach Kafka
#: (what is not delivered by then stays queued or spooled, nothing is lost).
SUBMIT_FLUSH_TIMEOUT_S = 10.0
_RUN_ID = re.compile(r"(?P<experiment>.+)_\d+_[0-9a-f]{8}")


class Workspace:
    """Connection settings plus the session (background sender, API client) shared by all
    runs logged through it.

    Use ``Workspace.from_env()`` in scripts; tests and embedding code pass keyword
    arguments (``kafka_transport`` builds the Kafka producer for a client id, ``urlopen``
    opens HTTP requests: both replaceable). ``token`` and the Kafka password are never
    shown in ``repr`` or logs.
    """

    def __init__(
        self,
        *,
        name: str = DEFAULT_WORKSPACE,
        kafka_bootstrap: str = EnvReader.DEFAULT_KAFKA,
        api_url: str = EnvReader.DEFAULT_API,
        home: str | os.PathLike[str] | None = None,
        topic: str = EnvReader.DEFAULT_TOPIC,
        token: str = "",
        options: ProducerOptions | None = None,
        kafka_security: KafkaSecurity | None = None,
        kafka_transport: TransportFactory | None = None,
        urlopen: Callable[..., Any] | None = None,
    ) -> None:
        self.name = check_name(name, "workspace name")
        if not api_url.startswith(("http://", "https://")):
            raise ConfigError("api_url", f"must be an http(s) URL, not {api_url!r}")
        if not kafka_bootstrap:
            raise ConfigError("kafka_bootstrap", "must not be empty")
        self.kafka_bootstrap = kafka_bootstrap
        self.kafka_security = kafka_security or KafkaSecurity()
        self.api_url = api_url.rstrip("/")
        self.home = Path(home).expanduser() if home is not None else default_home()
        self.topic = check_name(topic, "topic")
        self.options = options or ProducerOptions()
        api = ApiClient(
            api_url=self.api_url,
            token=token,
            timeout_s=self.options.api_timeout_s,
            workspace=self.name,
            urlopen=urlopen,
        )
        self._session = Session(
            name=self.name,
            options=self.options,
            api=api,
            transport=kafka_transport or self._kafka_transport,
            spool_dir=self.spool_dir,
            blob_dir=self.blob_dir,
        )
        self.codec = self._session.codec
        #: Azure ML's workspace coordinates, kept from a ``config.json`` (unused here).
        self.subscription_id = ""
        self.resource_group = ""
        self.location = ""

    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str] | None = None,
        auth: object = None,
        _logger: object = None,
        _file_name: str | None = None,
        *,
        options: ProducerOptions | None = None,
    ) -> Workspace:
        """The workspace described by a ``config.json`` found as Azure ML finds it (from
        ``path`` or the current folder up; see ``_config.py``); what the file leaves out
        comes from the environment as in ``from_env``. ``auth`` is accepted as in Azure
        ML and unused: the API token is the file's ``"token"`` or ``RUNSTREAM_TOKEN``."""
        file = find_config(path, _file_name)
        config = read_config(file)
        logger.info("Found the config file in: %s", file)
        read = EnvReader()
        workspace = cls(
            name=config.get("workspace_name")
            or config.get("name")
            or read.text("RUNSTREAM_WORKSPACE", DEFAULT_WORKSPACE),
            kafka_bootstrap=config.get("kafka_bootstrap") or read.kafka_bootstrap(),
            api_url=config.get("api_url") or read.api_url(),
            home=config.get("home") or read.home(),
            topic=config.get("topic") or read.topic(),
            token=config.get("token") or read.token().value,
            options=options,
            kafka_security=KafkaSecurity.from_env(),
        )
        workspace.subscription_id = config.get("subscription_id") or ""
        workspace.resource_group = config.get("resource_group") or ""
        workspace.location = config.get("location") or ""
        return workspace

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, options: ProducerOptions | None = None
    ) -> Workspace:
        """Read ``RUNSTREAM_{WORKSPACE,KAFKA,API,HOME,TOPIC,TOKEN}`` and the Kafka security
        variables (``RUNSTREAM_KAFKA_SECURITY_PROTOCOL``, ``…_USERNAME``, ``…_PASSWORD``,
        ``…_CA_FILE``…; see ``KafkaSecurity.from_env``) once, through ``EnvReader``."""
        read = EnvReader(env)
        return cls(
            name=read.text("RUNSTREAM_WORKSPACE", DEFAULT_WORKSPACE),
            kafka_bootstrap=read.kafka_bootstrap(),
            api_url=read.api_url(),
            home=read.home(),
            topic=read.topic(),
            token=read.token().value,
            options=options,
            kafka_security=KafkaSecurity.from_env(env),
        )

    def __repr__(self) -> str:
        return (
            f"Workspace(name={self.name!r}, kafka_bootstrap={self.kafka_bootstrap!r}, "
            f"api_url={self.api_url!r}, home={str(self.home)!r}, topic={self.topic!r})"
        )

    @property
    def spool_dir(self) -> Path:
        """Encoded events waiting for Kafka."""
        return self.home / "spool" / "events"

    @property
    def blob_dir(self) -> Path:
        """Artifact bytes waiting for the API."""
        return self.home / "spool" / "blobs"

    def _kafka_transport(self, client_id: str) -> KafkaTransport:
        return KafkaTransport(
            bootstrap=self.kafka_bootstrap,
            topic=self.topic,
            compression=self.options.compression,
            max_message_bytes=self.options.max_message_bytes,
            batch_bytes=self.options.batch_max_bytes,
            request_timeout_ms=self.options.request_timeout_ms,
            client_id=client_id,
            security=self.kafka_security,
        )

    def stats(self) -> ProducerStats:
        """Counters of the current (or last) sender; all zero before the first run."""
        return self._session.stats()

    def flush(self, timeout_s: float = DEFAULT_FLUSH_TIMEOUT_S) -> None:
        """Wait until every run's events are acknowledged by Kafka; raises on timeout."""
        self._session.flush(timeout_s)

    def get_run(self, run_id: str) -> Run:
        """A read-only handle on an existing run (``Run.attach``); ``NotFoundError`` if unknown."""
        return Run.attach(self, run_id)

    def compute_targets(self) -> list[dict[str, Any]]:
        """Queue state of every compute target: ``compute_target``, ``queued``, ``preparing``,
        ``running``, ``not_responding``, ``oldest_queued_age_s``, ``queue_wait_p50_s``,
        ``queue_wait_p95_s``, ``completed_1h``, ``failed_1h``, ``canceled_1h``."""
        self._session.flush_for_read()
        return list(self._session.api.pages("/v1/compute", (), "targets"))

    def compute_target(self, name: str) -> dict[str, Any]:
        """One target's queue state plus ``active_runs`` (run summaries of its queued,
        preparing, running and not-responding runs); ``NotFoundError`` if unknown."""
        check_name(name, "compute target")
        self._session.flush_for_read()
        return self._session.api.get_json(f"/v1/compute/{segment(name)}")

    def close(self, timeout_s: float = DEFAULT_FLUSH_TIMEOUT_S) -> None:
        """Deliver what fits in ``timeout_s``, spool the rest, stop the sender.

        Every run handle of this workspace is closed; a later run starts a new sender.
        """
        self._session.close(timeout_s)


class Experiment:
    """A named group of runs in a workspace; ``start_logging`` opens one, ``get_runs`` lists
    them (read-only handles, newest first by default)."""

    def __init__(self, workspace: Workspace, name: str) -> None:
        if not isinstance(workspace, Workspace):
            raise TypeError(f"workspace must be a Workspace, not {type(workspace).__name__}")
        self.workspace = workspace
        self.name = check_experiment_name(name)
        self._session = workspace._session

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r}, workspace={self.workspace.name!r})"

    def start_logging(
        self,
        *,
        display_name: str | None = None,
        compute_target: str | None = "local",
        capture_output: bool = False,
        outputs_dir: str | os.PathLike[str] | None = "outputs",
        properties: Mapping[str, Value] | None = None,
    ) -> Run:
        """Start an interactive run (NotStarted → Running) and return its handle.

        ``properties``: ``{key: value}`` of str, int, float or bool (hyper-parameters:
        ``{"lr": 0.1, "epochs": 10}``), stored and read back as those types; immutable.

        ``outputs_dir`` (relative to the current directory now) is uploaded as
        ``outputs/...`` artifacts when the run completes — every file in it then, also
        ones an earlier script left; None, or ``RUNSTREAM_CAPTURE_OUTPUTS=0`` in the
        environment, disables that.
        ``capture_output`` also records stdout/stderr lines until the run ends.
        """
        if display_name is not None:
            check_name(display_name, "display_name")
        if compute_target is not None:
            check_name(compute_target, "compute_target")
        return Run._open(
            self,
            self._new_run_id(),
            parent=None,
            rank=0,
            world_size=1,
            display_name=display_name,
            compute_target=compute_target,
            properties=properties or {},  # checked by Run._open
            outputs_dir=Path(outputs_dir).absolute() if outputs_dir is not None else None,
            statuses=("NotStarted", "Running"),
            capture_output=capture_output,
            owned=True,
        )

    def submit(
        self,
        config: object,
        tags: Mapping[str, object] | Iterable[str] | None = None,
        *,
        run_id: str | None = None,
        display_name: str | None = None,
        priority: int | None = None,
        max_retries: int | None = None,
        **kwargs: Any,
    ) -> Run:
        """Submit a ``ScriptRunConfig`` to its compute target and return the run, Queued.

        ``source_directory`` is snapshotted (``.amlignore``, else ``.gitignore``; at most
        300 MB and 2,000 files by default: ``RUNSTREAM_SNAPSHOT_MAX_BYTES``/``_FILES``),
        uploaded unless the API already has those bytes, and queued with
        ``POST /v1/submissions``; an agent serving the target runs the script with the
        arguments as its argv, and ``Run.get_context()`` in it logs into this run. The
        submission is durable once this returns. An unreachable API is retried for at most
        a minute, then ``ApiError`` says the run was not submitted.

        ``tags``: ``{key: value}`` set on the run (as in Azure ML). Runstream's keywords:
        ``run_id`` (default: a new ``<experiment>_<unix seconds>_<8 hex>``; submitting the
        same run id with the same content again is harmless), ``display_name``,
        ``priority`` (default ``run_config.priority``, 0: higher starts first) and
        ``max_retries`` (default ``run_config.max_retries``, 0: how often a run whose agent
        was lost is queued again). The handle returned reads the run
        (``wait_for_completion``, ``get_metrics``…), takes edits (tags, properties) and
        ``cancel()``; it logs no metrics (the script does).
        """
        if kwargs:
            raise TypeError(
                f"submit() got unexpected keyword arguments {sorted(kwargs)}; it takes "
                "config, tags and the keywords run_id, display_name, priority, max_retries"
            )
        queued = submission(
            self._session.api,
            config=config,
            experiment=self.name,
            workspace=self.workspace.name,
            run_id=self._new_run_id() if run_id is None else run_id,
            tags=tags,
            display_name=display_name,
            priority=priority,
            max_retries=max_retries,
            blob_timeout_s=self._session.options.blob_timeout_s,
        )
        opened = Run._open(
            self,
            queued.run_id,
            parent=None,
            rank=0,
            world_size=1,
            display_name=queued.display_name,
            compute_target=queued.target,
            properties=queued.properties,
            outputs_dir=None,
            statuses=("NotStarted", "Queued"),
        )
        for key, value in queued.tags:
            opened.tag(key, value)
        opened.close(SUBMIT_FLUSH_TIMEOUT_S)
        return Run._attached(self.workspace, {
            "run_id": queued.run_id,
            "experiment": self.name,
            "display_name": queued.display_name,
            "compute_target": queued.target,
            "properties": queued.properties,
            "status": "Queued",
        }, self)

    def get_runs(
        self,
        type: str | None = None,
        tags: str | Iterable[str] | Mapping[str, str | None] | None = None,
        properties: str | Iterable[str] | Mapping[str, str | None] | None = None,
        include_children: bool = False,
        *,
        status: str | Iterable[str] | None = None,
        order_by: str | None = None,
        order: str | None = None,
        compute_target: str | None = None,
        parent_run_id: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        limit: int | None = None,
        page_size: int = 100,
    ) -> Iterator[Run]:
        """The experiment's runs as read-only handles, fetched page by page as iterated:
        top-level runs only unless ``include_children`` (or ``parent_run_id``) says
        otherwise, as in Azure ML.

        ``tags``/``properties``: a key, a ``"key:value"``, a list of those, or
        ``{key: value or None}``; a run must carry all of them. ``type`` must be None
        (Runstream runs have no type). ``status``: one status or several ("Running",
        "Completed"…). ``order_by``: ``"created_at"`` (default, newest first) or
        ``"metric:<name>"`` (by the metric's last value; runs without it come last), with
        ``order`` ``"asc"`` or ``"desc"``. ``created_after``/``created_before``: aware
        datetimes or ISO 8601 strings. ``limit`` caps how many runs are yielded.
        """
        if type is not None:
            raise ValueError("type: Runstream runs have no type; leave it None")
        params = runs_query(
            experiment=self.name,
            status=status,
            tags=tags,
            properties=properties,
            top_level=not include_children and parent_run_id is None,
            order_by=order_by,
            order=order,
            compute_target=compute_target,
            parent_run_id=parent_run_id,
            created_after=created_after,
            created_before=created_before,
            page_size=page_size,
        )
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        return itertools.islice(self._runs(params), limit)

    @staticmethod
    def list(
        workspace: Workspace,
        experiment_name: str | None = None,
        view_type: str = "ActiveOnly",
        tags: object = None,
    ) -> builtins.list[Experiment]:
        """The workspace's experiments (those with at least one run), by name; only
        ``experiment_name`` when given. ``view_type`` is accepted as in Azure ML
        (Runstream never archives experiments); ``tags`` must be None (experiments carry
        none here: tag the runs)."""
        if tags is not None:
            raise ValueError("tags: Runstream experiments carry no tags; tag their runs")
        if view_type not in ("ActiveOnly", "All", "ArchivedOnly"):
            raise ValueError(f"view_type must be ActiveOnly, All or ArchivedOnly: {view_type!r}")
        if view_type == "ArchivedOnly":
            return []
        session = workspace._session
        session.flush_for_read()
        found = [
            Experiment(workspace, str(e["name"]))
            for e in session.api.pages("/v1/experiments", (), "experiments")
            if e.get("workspace") == workspace.name
        ]
        if experiment_name is not None:
            found = [e for e in found if e.name == experiment_name]
        return sorted(found, key=lambda e: e.name)

    def _repr_html_(self) -> str:
        return html_table({
            "Name": self.name,
            "Workspace": self.workspace.name,
            "Report Page": link(
                f"{self._session.api.api_url}/experiments/{segment(self.name)}",
                "Link to the studio",
            ),
            "Docs Page": link(DOCS_URL, "Link to Documentation"),
        })

    def _runs(self, params: builtins.list[tuple[str, str]]) -> Iterator[Run]:
        self._session.flush_for_read()
        found = False
        for summary in self._session.api.pages("/v1/runs", params, "runs"):
            found = True
            yield Run._attached(self.workspace, summary, self)
        if not found:
            self._warn_if_unknown()

    def _warn_if_unknown(self) -> None:
        """After an empty ``get_runs``: an ``UnknownExperimentWarning`` if no run of this
        experiment was ever stored (nor is being logged by this process) — likely a typo —,
        naming the workspace's experiments of a name like it."""
        if self._session.logged_in(self.name):
            return
        try:
            known = [e.name for e in Experiment.list(self.workspace)]
        except ApiError:
            return  # the list was read a moment ago; no second failure for a hint
        if self.name in known:
            return
        near = difflib.get_close_matches(self.name, known, n=3, cutoff=0.6)
        if near:
            hint = f"; did you mean {' or '.join(repr(n) for n in near)}?"
        elif known:
            hint = f"; check the name (it has {len(known)} other experiments)"
        else:
            hint = "; it has no experiments yet"
        warnings.warn(
            f"no run of experiment {self.name!r} exists in workspace {self.workspace.name!r}: "
            f"get_runs() is empty{hint}",
            UnknownExperimentWarning,
            stacklevel=3,
        )

    def _new_run_id(self) -> str:
        """Azure-style ``{experiment}_{unix seconds}_{8 hex}``, at most 255 characters."""
        if len(self.name) > MAX_RUN_EXPERIMENT_CHARS:
            raise ValueError(
                f"experiment name is {len(self.name)} characters: its runs' ids "
                f"('<experiment>_<unix seconds>_<8 hex>') would pass the {MAX_NAME_CHARS}-"
                f"character limit of a run id; start runs in an experiment of at most "
                f"{MAX_RUN_EXPERIMENT_CHARS} characters"
            )
        return f"{self.name}_{int(time.time())}_{secrets.token_hex(4)}"


class Run(RunHandle):
    """One run of an experiment, as seen by this process (one rank).

    Made by ``Experiment.start_logging``, ``Run.child_run`` or ``Run.get_context``; a run
    still active is reopened for logging from another process by ``Run.resume``. As a
    context manager, leaving the block completes the run and an exception fails it with
    the error recorded (``KeyboardInterrupt`` cancels it, "KeyboardInterrupt (Ctrl-C)").
    A run this process started and left open ends with the process: Failed at exit,
    Canceled on Ctrl-C or SIGTERM (``_exit.py``). ``Run.attach``,
    ``Workspace.get_run`` and ``Experiment.get_runs`` give read-only handles on existing
    runs. Read methods (``get_metrics``, ``get_details``, ``wait_for_completion``…) work
    on every handle.
    """

    def __init__(
        self, experiment: Experiment, run_id: str, outputs: object = None, **kwargs: Any
    ) -> None:
        """The run ``run_id`` of ``experiment``, fetched (``Run(experiment, run_id)`` as in
        Azure ML): a read-only handle for its metrics, files and details, which can still
        be tagged. A run this process logged into is waited for until it is stored.
        ``outputs`` is accepted as in Azure ML and unused (a fetched run uploads nothing).
        """
        if kwargs:
            raise TypeError(f"Run() takes no keyword arguments {sorted(kwargs)}")
        if not isinstance(experiment, Experiment):
            raise TypeError(f"experiment must be an Experiment, not {type(experiment).__name__}")
        check_name(run_id, "run id")
        details = experiment._session.run_details(run_id)
        if details.get("experiment") != experiment.name:
            raise NotFoundError(
                404,
                f"run {run_id!r} is in experiment {details.get('experiment')!r}, "
                f"not {experiment.name!r}",
                what=f"GET /v1/runs/{run_id}",
                retriable=False,
            )
        RunHandle.__init__(self, **Run._attached_parts(experiment.workspace, details, experiment))

    @classmethod
    def _new(cls, **parts: Any) -> Run:
        """A handle from its parts, without the public constructor's fetch."""
        run = cls.__new__(cls)
        RunHandle.__init__(run, **parts)
        return run

    def __repr__(self) -> str:
        return (
            f"Run(Experiment: {self._experiment.name},\nId: {self.id},\nType: None,\n"
            f"Status: {self._known_status})"
        )

    def _repr_html_(self) -> str:
        return html_table({
            "Experiment": self._experiment.name,
            "Id": self.id,
            "Type": None,
            "Status": self._known_status,
            "Details Page": link(
                f"{self._session.api.api_url}/runs/{segment(self.id)}", "Link to the studio"
            ),
            "Docs Page": link(DOCS_URL, "Link to Documentation"),
        })

    @staticmethod
    def list(
        experiment: Experiment,
        type: str | None = None,
        tags: str | Iterable[str] | Mapping[str, str | None] | None = None,
        properties: str | Iterable[str] | Mapping[str, str | None] | None = None,
        status: str | Iterable[str] | None = None,
        include_children: bool = False,
    ) -> builtins.list[Run]:
        """The experiment's runs, newest first (``Experiment.get_runs`` as a list)."""
        return builtins.list(
            experiment.get_runs(type, tags, properties, include_children, status=status)
        )

    def _handle(self, summary: Mapping[str, Any]) -> Run:
        return Run._attached(self._experiment.workspace, summary, self._experiment)

    def create_children(
        self,
        count: int | None = None,
        tag_key: str | None = None,
        tag_values: Iterable[str] | None = None,
    ) -> builtins.list[Run]:
        """Start several child runs at once: ``count`` of them, or one per value of
        ``tag_values``, each tagged ``tag_key`` = that value (as in Azure ML)."""
        values = builtins.list(tag_values) if tag_values is not None else None
        if (count is None) == (values is None):
            raise ValueError("create_children needs count= or tag_key= with tag_values=")
        if values is not None and tag_key is None:
            raise ValueError("tag_values needs a tag_key")
        if count is not None and (type(count) is not int or count < 1):
            raise ValueError(f"count must be a positive int, not {count!r}")
        children = []
        for value in values if values is not None else [None] * (count or 0):
            child = self.child_run()
            if tag_key is not None:
                child.tag(tag_key, value)
            children.append(child)
        return children

    def cancel(self) -> dict[str, Any] | None:  # type: ignore[override]
        """Cancel the run.

        A handle that logs into the run (``start_logging``, ``child_run``,
        ``get_context``) marks it Canceled, as before, and returns None. Any other handle
        (``experiment.submit``'s, ``Run(experiment, id)``, ``get_runs``) asks the API to
        cancel a submitted run (``POST /v1/runs/{id}/cancel``) and returns its answer
        ``{"run_id", "action", "state"}``: ``action`` "canceled" (it was queued: Canceled
        now), "cancel_requested" (running: its agent stops it — SIGTERM, a grace period,
        SIGKILL — and reports Canceled) or "none" (it had already ended). A run that was
        not submitted raises ``ReadOnlyRunError`` (``NotSubmittedError``, also an
        ``ApiError`` with the API's 409): only the handle that logs into it can cancel it.
        """
        if self._writes_here:
            RunHandle.cancel(self)
            return None
        answer = cancel_run(self._session.api, self.id)
        status = CANCEL_STATUS.get(str(answer.get("action")))
        if status is not None:
            self._known_status = status
            self._session.sent_status(self.id, status)  # reads wait (bounded) to see it
        return answer

    def get_snapshot_id(self) -> str:
        """The id of the submitted run's snapshot: the SHA-256 of its zip (also the run's
        ``ContentSnapshotId`` property). ``NotFoundError`` if the run was not submitted."""
        return snapshot_id(self._session.api, self.id)

    def restore_snapshot(
        self, snapshot_id: str | None = None, path: str | os.PathLike[str] | None = None
    ) -> str:
        """Download the submitted run's snapshot — the zip of its ``source_directory``,
        ignored files left out — and return the zip's absolute path: ``<path>/<snapshot
        id>.zip``, ``path`` being a directory (default: the system's temporary directory)
        as in Azure ML, or a path ending in ``.zip`` for the file itself. ``snapshot_id``
        must be None or the run's own (it has one snapshot). The bytes are checked against
        the snapshot's SHA-256; the file appears whole or not at all."""
        return restore_snapshot(self._session.api, self.id, snapshot_id, path)

    def register_model(
        self,
        model_name: str,
        model_path: str | None = None,
        tags: Mapping[str, str] | None = None,
        properties: Mapping[str, str] | None = None,
        model_framework: object = None,
        model_framework_version: object = None,
        description: str | None = None,
        datasets: object = None,
        sample_input_dataset: object = None,
        sample_output_dataset: object = None,
        resource_configuration: object = None,
        **kwargs: Any,
    ) -> Model:
        """Register the run's file or folder ``model_path`` (e.g. ``outputs/model.pkl``,
        as uploaded) as the next version of ``model_name``. A run this process logs into
        is flushed first and its files waited for (bounded). The framework, dataset and
        resource arguments are accepted as in Azure ML and must be None."""
        if kwargs:
            raise TypeError(f"register_model() takes no keyword arguments {sorted(kwargs)}")
        if model_path is None:
            raise ValueError("register_model needs model_path, e.g. 'outputs/model.pkl'")
        _only_files(datasets=datasets, model_framework=model_framework,
                    model_framework_version=model_framework_version,
                    sample_input_dataset=sample_input_dataset,
                    sample_output_dataset=sample_output_dataset,
                    resource_configuration=resource_configuration)
        path = PurePosixPath(os.path.normpath(model_path).replace(os.sep, "/")).as_posix()
        return Model._register(self._experiment.workspace, {
            "name": model_name, "path": path, "run_id": self.id,
            "tags": dict(tags or {}), "properties": dict(properties or {}),
            "description": description,
        }, wait_for_run=self.id)

    def child_run(self, name: str | None = None) -> Run:
        """Start a child run (own id; ``parent_run_id`` is this run; ``name`` its display name)."""
        if name is not None:
            check_name(name, "child run name")
        self._open_sender("child_run()")
        return Run._open(
            self._experiment,
            self._experiment._new_run_id(),
            parent=self,
            rank=self.rank,
            world_size=self._world_size,
            display_name=name,
            compute_target=self._compute_target,
            properties={},
            outputs_dir=None,
            statuses=("NotStarted", "Running"),
            owned=True,
        )

    @classmethod
    def open(
        cls,
        experiment: Experiment,
        run_id: str,
        *,
        status: str = "Running",
        display_name: str | None = None,
        compute_target: str | None = None,
        properties: Mapping[str, str] | None = None,
        outputs_dir: str | os.PathLike[str] | None = None,
        rank: int = 0,
        world_size: int = 1,
        attempt: int = 0,
    ) -> Run:
        """Open an existing run — usually a submitted one — as a new producer of this
        process and report ``status`` (Queued, Preparing, Running…): what agents and
        launchers use to drive a run (``set_status``, ``log_output``, then ``complete``,
        ``fail`` or ``cancel``). ``attempt`` numbers the tries of a submitted run (0 first;
        a higher one starts its statuses afresh). ``outputs_dir`` is uploaded as
        ``outputs/...`` on ``complete`` (rank 0 only; not with
        ``RUNSTREAM_CAPTURE_OUTPUTS=0``). Training code uses
        ``Run.get_context()`` instead."""
        check_name(run_id, "run id")
        if status not in ("NotStarted", "Queued", "Preparing", "Running"):
            raise ValueError(f"Run.open status must be NotStarted, Queued, Preparing or "
                             f"Running, not {status!r}")
        if display_name is not None:
            check_name(display_name, "display_name")
        if compute_target is not None:
            check_name(compute_target, "compute_target")
        if type(attempt) is not int or attempt < 0:
            raise ValueError(f"attempt must be an int >= 0, not {attempt!r}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        return cls._open(
            experiment,
            run_id,
            parent=None,
            rank=rank,
            world_size=world_size,
            display_name=display_name,
            compute_target=compute_target,
            properties=properties or {},
            outputs_dir=Path(outputs_dir).absolute() if outputs_dir is not None else None,
            statuses=(status,),
            attempt=attempt,
        )

    @classmethod
    def attach(cls, workspace: Workspace, run_id: str) -> Run:
        """A read-only handle on an existing run; ``NotFoundError`` if the API does not
        know it (yet: a run appears when the worker commits its first event)."""
        check_name(run_id, "run id")
        return cls._attached(workspace, workspace._session.run_details(run_id))

    @classmethod
    def resume(
        cls,
        workspace_or_experiment: Workspace | Experiment,
        run_id: str,
        *,
        rank: int = 0,
        world_size: int = 1,
        capture_output: bool = False,
        outputs_dir: str | os.PathLike[str] | None = "outputs",
    ) -> Run:
        """Reopen a run that is still active for logging from this process — one whose
        process closed it (``run.close()``) to leave it to another, was killed, or is
        still logging — as a new producer of its own, reporting Running.

        Any status but Completed, Failed and Canceled can be resumed (those raise
        ``RunEndedError`` naming the status; an unknown run ``NotFoundError``; an
        ``Experiment`` given must be the run's). ``log`` and ``log_image`` without
        ``step=`` go on after the highest step stored for each series and image when this
        is called (all ranks; see ``_resume.py``); a series first logged now starts at
        0. This process owns the run from now on, as ``start_logging``'s: it completes it
        (``complete()``, or leaving a ``with`` block), and exiting without doing so fails
        it (Ctrl-C, SIGTERM: Canceled; ``_exit.py``) — ``close()`` instead leaves it
        active for yet another process. ``rank``/``world_size``: this process's place in
        a distributed job (0 of 1). ``outputs_dir`` (relative to the current directory
        now; None: none) is uploaded as ``outputs/...`` on ``complete()`` (rank 0 of a
        top-level run; not with ``RUNSTREAM_CAPTURE_OUTPUTS=0``). ``capture_output``
        records stdout/stderr lines until the run ends.
        """
        check_name(run_id, "run id")
        if type(world_size) is not int or type(rank) is not int or world_size < 1 or not (
                0 <= rank < world_size):
            raise ValueError(f"rank {rank!r} is not in 0..{world_size - 1}")
        if isinstance(workspace_or_experiment, Experiment):
            workspace = workspace_or_experiment.workspace
        elif isinstance(workspace_or_experiment, Workspace):
            workspace = workspace_or_experiment
        else:
            raise TypeError("Run.resume takes a Workspace or an Experiment, not "
                            f"{type(workspace_or_experiment).__name__}")
        point = resume_point(workspace._session, run_id)
        details = point.details
        experiment_name = str(details.get("experiment"))
        if isinstance(workspace_or_experiment, Experiment):
            experiment = workspace_or_experiment
            if experiment.name != experiment_name:
                raise NotFoundError(
                    404,
                    f"run {run_id!r} is in experiment {experiment_name!r}, "
                    f"not {experiment.name!r}",
                    what="Run.resume()",
                    retriable=False,
                )
        else:
            experiment = Experiment(workspace, experiment_name)
        parts = cls._attached_parts(workspace, details, experiment)
        run = cls._open(
            experiment,
            run_id,
            parent=parts["parent"],
            rank=rank,
            world_size=world_size,
            display_name=None,  # the run keeps its own: only its first start sets them
            compute_target=None,
            properties={},
            outputs_dir=Path(outputs_dir).absolute() if outputs_dir is not None else None,
            statuses=("Running",),
            capture_output=capture_output,
            attempt=point.attempt,
            owned=True,
        )
        run._display_name = parts["display_name"]
        run._compute_target = parts["compute_target"]
        run._properties = parts["properties"]
        run._description = parts["description"]
        run.continue_steps(point.next_steps, point.next_image_steps)
        return run

    @classmethod
    def get_context(
        cls,
        allow_offline: bool = True,
        used_for_context_manager: bool = False,
        *,
        workspace: Workspace | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Run:
        """The run this process was launched for: ``RUNSTREAM_RUN_ID`` (+ ``_EXPERIMENT``,
        ``_RANK``, ``_WORLD_SIZE``, ``_ATTEMPT``). Every rank opens the same run as its own
        producer.

        Without ``RUNSTREAM_RUN_ID`` a new run is started in ``RUNSTREAM_EXPERIMENT``
        (default "default"), so a script also runs outside a launcher — unless
        ``allow_offline`` is False, which raises ``ConfigError`` instead (Azure ML's
        meaning). ``used_for_context_manager`` is accepted as in Azure ML. Called without
        keyword arguments, it returns the same handle on every call in this process.
        """
        cacheable = workspace is None and env is None
        read = EnvReader(env)
        run_id = read.text("RUNSTREAM_RUN_ID") or None
        if run_id is None and not allow_offline:
            raise ConfigError(
                "RUNSTREAM_RUN_ID",
                "is not set: this process was not launched for a run (allow_offline=False)",
            )
        rank = read.integer("RUNSTREAM_RANK", 0)
        world_size = read.integer("RUNSTREAM_WORLD_SIZE", 1)
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError("RUNSTREAM_RANK", f"rank {rank} is not in 0..{world_size - 1}")
        key = (run_id, rank)
        with _context_lock:
            cached = _context_runs.get(key) if cacheable else None
            if cached is not None and not cached.closed:
                return cached
            run = cls._open_context(
                workspace or Workspace.from_env(env),
                read.text("RUNSTREAM_EXPERIMENT") or None,
                run_id,
                rank,
                world_size,
                attempt=read.integer("RUNSTREAM_ATTEMPT", 0),
            )
            if cacheable:
                _context_runs[key] = run
        return run

    @classmethod
    def _open(
        cls,
        experiment: Experiment,
        run_id: str,
        *,
        parent: Run | None,
        rank: int,
        world_size: int,
        display_name: str | None,
        compute_target: str | None,
        properties: Mapping[str, object],
        outputs_dir: Path | None,
        statuses: tuple[str, ...],
        capture_output: bool = False,
        attempt: int = 0,
        owned: bool = False,
    ) -> Run:
        """Open a run handle as a new producer and emit its first lifecycle events.

        ``owned``: this process started the run for itself (``start_logging``,
        ``child_run``): it ends the run if the process ends first (``_exit.py``)."""
        checked = check_properties(properties)
        # ./outputs belongs to the whole job: rank 0 of a top-level run uploads it once
        # (none with RUNSTREAM_CAPTURE_OUTPUTS=0, read before anything is opened).
        if parent is not None or rank != 0 or not _capture_outputs():
            outputs_dir = None
        session = experiment._session
        stream = Stream(
            run_id=run_id,
            experiment=experiment.name,
            workspace=session.name,
            producer_id=uuid.uuid4().hex,
            rank=rank,
        )
        run = cls._new(
            experiment=experiment,
            session=session,
            stream=stream,
            sender=session.open_stream(stream),
            parent=parent,
            world_size=world_size,
            display_name=display_name,
            compute_target=compute_target,
            properties=checked,
            outputs_dir=outputs_dir,
            attempt=attempt,
        )
        run._start(statuses, capture_output)
        if parent is not None:
            session.started_child(parent.id, run_id)
        if owned:
            run.own_until_exit()
        return run

    @classmethod
    def _attached(
        cls,
        workspace: Workspace,
        summary: Mapping[str, Any],
        experiment: Experiment | None = None,
    ) -> Run:
        """A read-only handle built from a RunSummary (or RunDetails); no I/O."""
        return cls._new(**cls._attached_parts(workspace, summary, experiment))

    @classmethod
    def _attached_parts(
        cls,
        workspace: Workspace,
        summary: Mapping[str, Any],
        experiment: Experiment | None = None,
    ) -> dict[str, Any]:
        """The parts of a read-only handle on a RunSummary (or RunDetails); no I/O.

        Its parent, if any, is a read-only handle known by id only (no display name).
        """
        try:
            run_id = str(summary["run_id"])
            experiment_name = str(summary["experiment"])
        except KeyError as exc:
            raise ApiError(
                200, f"run summary without {exc.args[0]!r}", what="GET /v1/runs", retriable=False
            ) from None
        if experiment is None or experiment.name != experiment_name:
            experiment = Experiment(workspace, experiment_name)
        parent_id = summary.get("parent_run_id")
        parent = None
        if parent_id:
            known = {"run_id": parent_id, "experiment": experiment_name}
            parent = cls._attached(workspace, known, experiment)
        stream = Stream(
            run_id=run_id,
            experiment=experiment_name,
            workspace=workspace.name,
            producer_id="",
            rank=0,
        )
        stream.closed = True
        return {
            "experiment": experiment,
            "session": workspace._session,
            "stream": stream,
            "sender": None,
            "parent": parent,
            "world_size": 1,
            "display_name": summary.get("display_name"),
            "compute_target": summary.get("compute_target"),
            "properties": dict(summary.get("properties") or {}),
            "outputs_dir": None,
            "known_status": summary.get("status"),
            "description": summary.get("description"),
        }

    @classmethod
    def _open_context(
        cls,
        workspace: Workspace,
        experiment_name: str | None,
        run_id: str | None,
        rank: int,
        world_size: int,
        attempt: int = 0,
    ) -> Run:
        if run_id is None:
            experiment = Experiment(workspace, experiment_name or "default")
            return experiment.start_logging(compute_target=None, outputs_dir="outputs")
        check_name(run_id, "RUNSTREAM_RUN_ID")
        if experiment_name is None:
            match = _RUN_ID.fullmatch(run_id)
            if match is None:
                raise ConfigError(
                    "RUNSTREAM_EXPERIMENT",
                    f"is required: RUNSTREAM_RUN_ID {run_id!r} is not <experiment>_<unix>_<8 hex>",
                )
            experiment_name = match["experiment"]
        return cls._open(
            Experiment(workspace, experiment_name),
            run_id,
            parent=None,
            rank=rank,
            world_size=world_size,
            display_name=None,
            compute_target=None,
            properties={"world_size": str(world_size)},
            outputs_dir=Path("outputs").absolute(),
            statuses=("Running",),
            attempt=attempt,
        )


def _capture_outputs() -> bool:
    """``RUNSTREAM_CAPTURE_OUTPUTS`` (default on): whether a run opened now uploads its
    ``outputs_dir`` when it completes; read as each run opens, so a malformed value fails
    there, naming the variable."""
    return EnvReader().flag("RUNSTREAM_CAPTURE_OUTPUTS", True)


#: ``Run.get_context()`` handles by (run id, rank): one per process.
_context_runs: dict[tuple[str | None, int], Run] = {}
_context_lock = threading.Lock()
