"""Runstream producer SDK: log experiment runs without ever blocking training.

from producer import Workspace, Experiment
ws = Workspace.from_env()
with Experiment(ws, "diabetes").start_logging(display_name="ridge") as run:
    run.log("alpha", 0.5)
"""

from ._errors import (
    BlobUploadError,
    ConfigError,
    KafkaUnavailableError,
    ProducerError,
    ProducerTimeoutError,
    RunClosedError,
    SpoolError,
    TransportError,
)
from ._experiment import Experiment
from ._options import ProducerOptions
from ._run import Run
from ._sender import ProducerStats
from ._sync import SyncProgress, SyncResult, sync
from ._version import __version__
from ._workspace import Workspace

__all__ = [
    "BlobUploadError",
    "ConfigError",
    "Experiment",
    "KafkaUnavailableError",
    "ProducerError",
    "ProducerOptions",
    "ProducerStats",
    "ProducerTimeoutError",
    "Run",
    "RunClosedError",
    "SpoolError",
    "SyncProgress",
    "SyncResult",
    "TransportError",
    "Workspace",
    "__version__",
    "sync",
]
