"""Runstream producer SDK: log experiment runs without ever blocking training.

from producer import Workspace, Experiment
ws = Workspace.from_env()
with Experiment(ws, "diabetes").start_logging(display_name="ridge") as run:
    run.log("alpha", 0.5)
run.wait_for_completion(show_output=False); run.get_metrics()   # {"alpha": 0.5}
"""

from ._env import EnvReader
from ._errors import (
    ApiError,
    BlobUploadError,
    ConfigError,
    KafkaUnavailableError,
    NotFoundError,
    ProducerError,
    ProducerTimeoutError,
    ReadOnlyRunError,
    RunClosedError,
    RunEndedError,
    RunFailedError,
    SpoolError,
    TransportError,
    UnknownExperimentWarning,
)
from ._history import MetricHistory
from ._kafka_security import KafkaSecurity, KafkaSecurityError
from ._model import Model
from ._options import ProducerOptions
from ._runconfig import (
    CondaDependencies,
    DockerConfiguration,
    Environment,
    MpiConfiguration,
    PyTorchConfiguration,
    RunConfiguration,
    ScriptRunConfig,
    TensorflowConfiguration,
)
from ._secret import Secret
from ._sender import ProducerStats
from ._snapshot import SnapshotError, extract_snapshot
from ._sync import SyncProgress, SyncResult, sync
from ._version import __version__
from ._workspace import Experiment, Run, Workspace

__all__ = [
    "ApiError",
    "BlobUploadError",
    "CondaDependencies",
    "ConfigError",
    "DockerConfiguration",
    "EnvReader",
    "Environment",
    "Experiment",
    "KafkaSecurity",
    "KafkaSecurityError",
    "KafkaUnavailableError",
    "MetricHistory",
    "Model",
    "MpiConfiguration",
    "NotFoundError",
    "ProducerError",
    "ProducerOptions",
    "ProducerStats",
    "ProducerTimeoutError",
    "PyTorchConfiguration",
    "ReadOnlyRunError",
    "Run",
    "RunClosedError",
    "RunConfiguration",
    "RunEndedError",
    "RunFailedError",
    "ScriptRunConfig",
    "Secret",
    "SnapshotError",
    "SpoolError",
    "SyncProgress",
    "SyncResult",
    "TensorflowConfiguration",
    "TransportError",
    "UnknownExperimentWarning",
    "Workspace",
    "__version__",
    "extract_snapshot",
    "sync",
]
