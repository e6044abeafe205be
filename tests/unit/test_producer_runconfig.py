"""Submission configuration (``producer._runconfig``): Azure ML SDK v1 parity and behaviour.

``AZURE`` records, from azureml-core 1.60.0's source (``azureml/core/script_run_config.py``,
``runconfig.py``, ``environment.py``, ``conda_dependencies.py``; the package is not
installed here), every parameter of each constructor and public method kept: names,
order, defaults, ``*``/``**`` parameters, and whether it is a staticmethod. Unlike
test_producer_azure.py, Azure's ``_internal`` parameters are compared too: these
signatures are copied whole.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

import producer
from producer import (
    CondaDependencies,
    DockerConfiguration,
    Environment,
    MpiConfiguration,
    PyTorchConfiguration,
    RunConfiguration,
    ScriptRunConfig,
    TensorflowConfiguration,
)
from producer._runconfig import (
    DEFAULT_CPU_IMAGE,
    PYTHON_DEFAULT_VERSION,
    SUBMISSION_SCHEMA,
    DockerSection,
    PythonSection,
)

EMPTY = inspect.Parameter.empty
STATIC = "static"

#: (class, method) → Azure's parameters in order: ``name``, ``(name, default)``, ``"*name"``,
#: ``"**name"``; a leading ``STATIC`` marks a staticmethod. ``self`` is left out.
AZURE: dict[tuple[type, str], list[Any]] = {
    # azureml/core/script_run_config.py:322 (MAX_DURATION_SECONDS_DEFAULT = 2592000, :319)
    (ScriptRunConfig, "__init__"): [
        "source_directory", ("script", None), ("arguments", None), ("run_config", None),
        ("_telemetry_values", None), ("compute_target", None), ("environment", None),
        ("distributed_job_config", None), ("resume_from", None),
        ("max_run_duration_seconds", 2592000), ("command", None),
        ("docker_runtime_config", None),
    ],
    # azureml/core/runconfig.py:1298
    (RunConfiguration, "__init__"): [
        ("script", None), ("arguments", None), ("framework", None), ("communicator", None),
        ("conda_dependencies", None), ("_history_enabled", None), ("_path", None),
        ("_name", None), ("command", None),
    ],
    # runconfig.py:128, :154, :186, :546 (_DEFAULT_SHM_SIZE = "2g", environment.py:54)
    (TensorflowConfiguration, "__init__"): [("worker_count", 1), ("parameter_server_count", 1)],
    (MpiConfiguration, "__init__"): [("process_count_per_node", 1), ("node_count", 1)],
    (PyTorchConfiguration, "__init__"): [
        ("communication_backend", "Nccl"), ("process_count", None), ("node_count", 1),
    ],
    (DockerConfiguration, "__init__"): [
        ("use_docker", False), ("shared_volumes", True), ("arguments", []), ("shm_size", "2g"),
    ],
    # azureml/core/environment.py:108, :398, :1004, :1077, :1114, :1134, :1164, :1288, :1352
    (PythonSection, "__init__"): ["**kwargs"],
    (DockerSection, "__init__"): ["**kwargs"],
    (Environment, "__init__"): ["name", "**kwargs"],
    (Environment, "register"): ["workspace"],
    (Environment, "clone"): ["new_name"],
    (Environment, "get"): [STATIC, "workspace", "name", ("version", None), ("label", None)],
    (Environment, "list"): [STATIC, "workspace"],
    (Environment, "from_conda_specification"): [STATIC, "name", "file_path"],
    (Environment, "from_pip_requirements"): [
        STATIC, "name", "file_path", ("pip_version", None),
    ],
    # azureml/core/conda_dependencies.py:126, :147 (PYTHON_DEFAULT_VERSION = '3.9.12', :32), ...
    (CondaDependencies, "__init__"): [
        ("conda_dependencies_file_path", None), ("_underlying_structure", None),
    ],
    (CondaDependencies, "create"): [
        STATIC, ("pip_indexurl", None), ("pip_packages", None), ("conda_packages", None),
        ("python_version", "3.9.12"), ("pin_sdk_version", True),
    ],
    (CondaDependencies, "set_pip_index_url"): ["index_url"],
    (CondaDependencies, "get_python_version"): [],
    (CondaDependencies, "set_python_version"): ["version"],
    (CondaDependencies, "add_channel"): ["channel"],
    (CondaDependencies, "remove_channel"): ["channel"],
    (CondaDependencies, "add_conda_package"): ["conda_package"],
    (CondaDependencies, "remove_conda_package"): ["conda_package"],
    (CondaDependencies, "add_pip_package"): ["pip_package"],
    (CondaDependencies, "set_pip_option"): ["pip_option"],
    (CondaDependencies, "remove_pip_option"): ["pip_option"],
    (CondaDependencies, "remove_pip_package"): ["pip_package"],
    (CondaDependencies, "set_pip_requirements"): ["pip_requirements"],
    (CondaDependencies, "serialize_to_string"): [],
    (CondaDependencies, "as_dict"): [],
}

#: Read properties of Azure's (``conda_dependencies.py:277-372``; ``runconfig.py`` target,
#: environment_variables; ``environment.py`` DockerSection's deprecated ones).
AZURE_PROPERTIES: dict[type, list[str]] = {
    CondaDependencies: ["conda_channels", "conda_packages", "pip_packages", "pip_options"],
    RunConfiguration: ["target", "environment_variables"],
    Environment: ["environment_variables"],
    DockerSection: ["enabled", "shm_size", "shared_volumes", "arguments"],
}


def _azure_params(spec: list[Any]) -> list[tuple[str, Any, inspect._ParameterKind]]:
    out: list[tuple[str, Any, inspect._ParameterKind]] = []
    for item in spec:
        if item == STATIC:
            continue
        if isinstance(item, tuple):
            out.append((item[0], item[1], inspect.Parameter.POSITIONAL_OR_KEYWORD))
        elif item.startswith("**"):
            out.append((item[2:], EMPTY, inspect.Parameter.VAR_KEYWORD))
        else:
            out.append((item, EMPTY, inspect.Parameter.POSITIONAL_OR_KEYWORD))
    return out


def _by_name(key: tuple[type, str]) -> tuple[str, str]:
    return key[0].__name__, key[1]


def _class_name(cls: type) -> str:
    return cls.__name__


METHODS = sorted(AZURE, key=_by_name)
CLASSES = sorted(AZURE_PROPERTIES, key=_class_name)


@pytest.mark.parametrize(("cls", "method"), METHODS, ids=str)
def test_signatures_match_azureml_core(cls: type, method: str) -> None:
    spec = AZURE[cls, method]
    ours = [
        (p.name, p.default, p.kind)
        for p in inspect.signature(getattr(cls, method)).parameters.values()
        if p.name != "self"
    ]
    assert ours == _azure_params(spec)
    is_static = isinstance(inspect.getattr_static(cls, method), staticmethod)
    assert is_static == (spec[:1] == [STATIC])


@pytest.mark.parametrize("cls", CLASSES, ids=str)
def test_read_properties_are_properties(cls: type) -> None:
    for name in AZURE_PROPERTIES[cls]:
        assert isinstance(inspect.getattr_static(cls, name), property), name


def test_constants_are_azures() -> None:
    assert ScriptRunConfig.MAX_DURATION_SECONDS_DEFAULT == 2592000
    assert PYTHON_DEFAULT_VERSION == "3.9.12"
    assert DEFAULT_CPU_IMAGE == "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04"


def test_exported_from_producer() -> None:
    for name in ("ScriptRunConfig", "RunConfiguration", "CondaDependencies",
                 "PyTorchConfiguration", "MpiConfiguration", "TensorflowConfiguration",
                 "DockerConfiguration"):
        assert name in producer.__all__
    assert producer.Environment is Environment  # `from producer import Environment` works


# ---- defaults -------------------------------------------------------------------------------


def test_environment_defaults_are_azures() -> None:
    env = Environment("user-managed-env")
    assert (env.name, env.version) == ("user-managed-env", None)
    assert env.python.interpreter_path == "python"
    assert env.python.user_managed_dependencies is False
    assert isinstance(env.python.conda_dependencies, CondaDependencies)
    assert env.docker.enabled is False
    assert env.docker.base_image == DEFAULT_CPU_IMAGE
    assert env.docker.shm_size == "2g"
    assert env.docker.shared_volumes is True
    assert env.docker.arguments == []
    assert env.environment_variables == {"EXAMPLE_ENV_VAR": "EXAMPLE_VALUE"}
    assert str(env) == "Environment(Name: user-managed-env,\nVersion: None)"
    described = json.loads(repr(env))
    assert described["name"] == "user-managed-env"
    assert described["python"]["interpreterPath"] == "python"


def test_environment_name_must_be_a_str() -> None:
    with pytest.raises(TypeError, match="Environment name expected str, <class 'int'> found"):
        Environment(3)  # type: ignore[arg-type]
    assert Environment(None).name is None  # Azure allows it (EnvironmentDefinition())
    with pytest.raises(TypeError, match="unexpected keyword"):
        Environment("x", colour="red")


def test_skip_defaults_leaves_the_sections_empty() -> None:
    env = Environment("bare", _skip_defaults=True)
    assert env.python.conda_dependencies is None
    assert env.docker.base_image is None
    assert env.environment_variables == {}
    sub = ScriptRunConfig(".", script="t.py", environment=env).to_submission()["environment"]
    assert (sub["pip"], sub["conda"], sub["python_version"]) == ([], [], None)


def test_conda_dependencies_defaults_are_azures_base_file() -> None:
    cd = CondaDependencies()
    assert list(cd.pip_packages) == ["azureml-defaults"]
    assert list(cd.conda_packages) == ["python=3.8.13"]
    assert list(cd.conda_channels) == ["anaconda", "conda-forge"]
    assert list(cd.pip_options) == []
    assert cd.get_python_version() == "3.8.13"
    assert cd.serialize_to_string() == (
        "name: project_environment\n"
        "dependencies:\n"
        "- python=3.8.13\n"
        "- pip:\n"
        "  - azureml-defaults\n"
        "channels:\n"
        "- anaconda\n"
        "- conda-forge\n"
    )


def test_run_configuration_defaults_are_azures() -> None:
    rc = RunConfiguration()
    assert rc.target == "local"
    assert (rc.node_count, rc.max_run_duration_seconds) == (1, None)
    assert (rc.framework, rc.communicator) == ("Python", "None")
    assert (rc.script, rc.arguments, rc.command) == (None, [], "")
    assert rc.environment.name == "default-environment"
    assert rc.environment_variables == {}
    assert isinstance(rc.docker, DockerConfiguration)
    assert rc.docker.use_docker is False
    assert isinstance(rc.mpi, MpiConfiguration)
    assert isinstance(rc.pytorch, PyTorchConfiguration)
    assert isinstance(rc.tensorflow, TensorflowConfiguration)
    cd = CondaDependencies.create(pip_packages=["numpy"])
    assert RunConfiguration(conda_dependencies=cd).environment.python.conda_dependencies is cd
    json.loads(repr(rc))


def test_distributed_and_docker_configuration_defaults() -> None:
    pt = PyTorchConfiguration()
    assert (pt.communication_backend, pt.process_count, pt.node_count) == ("nccl", None, 1)
    assert PyTorchConfiguration("GLOO").communication_backend == "gloo"
    mpi = MpiConfiguration()
    assert (mpi.process_count_per_node, mpi.node_count) == (1, 1)
    tf = TensorflowConfiguration()
    assert (tf.worker_count, tf.parameter_server_count) == (1, 1)
    dc = DockerConfiguration()
    assert (dc.use_docker, dc.shared_volumes, dc.arguments, dc.shm_size) == (False, True, [], "2g")
    dc.arguments.append("--gpus=all")
    assert DockerConfiguration().arguments == []  # the default list is never shared


def test_pytorch_backend_is_checked_with_azures_message() -> None:
    with pytest.raises(
        ValueError,
        match=r"^Mpi is not a supported backend\. 'communication_backend' must be 'Nccl' or "
        r"'Gloo'\.$",
    ):
        PyTorchConfiguration("Mpi")
    with pytest.raises(ValueError, match="node_count must be at least 1"):
        PyTorchConfiguration(node_count=0)
    with pytest.raises(TypeError, match="process_count must be an int"):
        PyTorchConfiguration(process_count=1.5)  # type: ignore[arg-type]


# ---- ScriptRunConfig -----------------------------------------------------------------------


def test_script_run_config_without_run_config_builds_one() -> None:
    env = Environment("user-managed-env")
    src = ScriptRunConfig(source_directory="./scripts", script="train.py", environment=env)
    assert (src.source_directory, src.script, src.arguments, src.command) == (
        "./scripts", "train.py", None, None,
    )
    rc = src.run_config
    assert isinstance(rc, RunConfiguration)
    assert rc.target == "local"
    assert rc.environment is env
    assert rc.max_run_duration_seconds == 2592000
    default = ScriptRunConfig(".", script="train.py").run_config
    assert default.environment.name == "default-environment"


def test_compute_target_by_name_or_object() -> None:
    class Target:
        name = "gpu-cluster"

    assert ScriptRunConfig(".", script="t.py", compute_target="cpu").run_config.target == "cpu"
    assert ScriptRunConfig(".", script="t.py", compute_target=Target()).run_config.target == (
        "gpu-cluster"
    )
    with pytest.raises(TypeError, match="target must be a compute target name"):
        ScriptRunConfig(".", script="t.py", compute_target=42)
    rc = RunConfiguration()
    rc.target = Target()
    assert rc.target == "gpu-cluster"


def test_exactly_one_of_script_and_command() -> None:
    with pytest.raises(ValueError, match=r"takes script= or command=, not both"):
        ScriptRunConfig(".", script="train.py", command=["ls"])
    with pytest.raises(ValueError, match=r"needs script= .* or command="):
        ScriptRunConfig(".")
    with pytest.raises(ValueError, match="arguments= go with script="):
        ScriptRunConfig(".", command=["python", "train.py"], arguments=["--x", 1])
    with pytest.raises(ValueError, match="not both"):  # a run_config's script counts too
        ScriptRunConfig(".", command="ls", run_config=RunConfiguration(script="train.py"))


@pytest.mark.parametrize(
    ("script", "error", "message"),
    [
        ("/abs/train.py", ValueError, "must be a path relative to source_directory"),
        ("C:\\x\\train.py", ValueError, "must be a path relative to source_directory"),
        ("../train.py", ValueError, r"must stay inside source_directory \(no '\.\.'\)"),
        ("sub/../../train.py", ValueError, "must stay inside"),
        ("sub\\..\\train.py", ValueError, "must stay inside"),
        ("  ", ValueError, "script must not be empty"),
        (3, TypeError, "script must be a str path"),
    ],
)
def test_script_must_be_a_relative_path_inside(script: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        ScriptRunConfig(".", script=script)


def test_script_need_not_exist_yet(tmp_path: Path) -> None:
    """As in Azure, the file is looked for when the run is submitted, not here."""
    src = ScriptRunConfig(tmp_path, script=PurePosixPath("sub/train.py"))
    assert src.to_submission()["script"] == "sub/train.py"
    assert src.to_submission()["source_directory"] == str(tmp_path)


ODD = [
    "two words",
    "it's \"quoted\"",
    "$(rm -rf /) `id` $HOME; echo hi | cat > f &",
    "ünïcødé ✓ 日本語",
    "*.py",
    "--flag=a b",
    "",
    "-",
    "line\nbreak\ttab",
]


def test_arguments_stay_verbatim() -> None:
    values: list[Any] = [*ODD, 1, -2, 0.1, 1e-07, True, False, Path("data/x.csv"), 10**30]
    src = ScriptRunConfig(".", script="train.py", arguments=values)
    assert src.arguments is values  # kept as given, like Azure
    argv = src.to_submission()["arguments"]
    assert argv == [*ODD, "1", "-2", "0.1", "1e-07", "True", "False", "data/x.csv", str(10**30)]
    assert json.loads(json.dumps(src.to_submission()))["arguments"] == argv
    cmd = ScriptRunConfig(".", command=("python", "train.py", *ODD)).to_submission()
    assert (cmd["command"], cmd["shell_command"], cmd["script"]) == (
        ["python", "train.py", *ODD], None, None,
    )
    shell = ScriptRunConfig(".", command="python train.py --x 'a b' | tee log").to_submission()
    assert (shell["command"], shell["shell_command"]) == (
        None, "python train.py --x 'a b' | tee log",
    )


def test_numpy_like_scalars_become_their_str() -> None:
    class Scalar:
        def item(self) -> float:
            return 0.5

    argv = ScriptRunConfig(".", script="t.py", arguments=[Scalar()]).to_submission()["arguments"]
    assert argv == ["0.5"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--sizes", [1, 2]], r"arguments\[1\] must be a str.*not list; nested lists"),
        (["--opts", {"a": 1}], r"arguments\[1\] .* not dict; nested"),
        (["--x", None], r"arguments\[1\] .* not NoneType$"),
        ([b"bytes"], r"arguments\[0\] .* not bytes$"),
        ([Fraction(1, 3) * 1j], r"arguments\[0\] .* not complex"),
        ("--x 1", r"arguments must be a list of values, not str \(split it: shlex.split"),
        ({"--x": 1}, "arguments must be a list of values, not dict"),
    ],
)
def test_arguments_refused(arguments: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        ScriptRunConfig(".", script="train.py", arguments=arguments)


def test_nul_in_an_argument_is_refused() -> None:
    with pytest.raises(ValueError, match="contains NUL"):
        ScriptRunConfig(".", script="train.py", arguments=["a\x00b"])
    with pytest.raises(ValueError, match=r"command\[0\] .* must not be empty"):
        ScriptRunConfig(".", command=["", "x"])
    with pytest.raises(ValueError, match="must be a shell command line"):
        ScriptRunConfig(".", command="  ")


def test_to_submission_checks_again_after_changes() -> None:
    src = ScriptRunConfig(".", script="train.py")
    src.script = "/etc/passwd"
    with pytest.raises(ValueError, match="relative"):
        src.to_submission()
    src.script = "train.py"
    src.arguments = [[1]]
    with pytest.raises(TypeError, match="nested"):
        src.to_submission()
    src.arguments = None
    src.run_config.environment = "docker-env"  # type: ignore[assignment]
    with pytest.raises(TypeError, match=r"run_config\.environment must be an Environment"):
        src.to_submission()


def test_notebook_environment_round_trip() -> None:
    """train-on-local cells [13]-[33]: the same ScriptRunConfig, three environments."""
    user_managed_env = Environment("user-managed-env")
    user_managed_env.python.user_managed_dependencies = True
    src = ScriptRunConfig(source_directory="./scripts", script="train.py",
                          environment=user_managed_env)
    sub = src.to_submission()
    assert sub == {
        "schema": SUBMISSION_SCHEMA,
        "source_directory": "./scripts",
        "script": "train.py",
        "arguments": [],
        "command": None,
        "shell_command": None,
        "target": "local",
        "environment": {
            "name": "user-managed-env",
            "version": None,
            "user_managed": True,
            "interpreter": "python",
            "python_version": "3.8.13",
            "pip": [],
            "pip_options": [],
            "pip_version": None,
            "conda": [],
            "docker": False,
            "base_image": DEFAULT_CPU_IMAGE,
            "docker_shm_size": "2g",
            "docker_arguments": [],
            "variables": {"EXAMPLE_ENV_VAR": "EXAMPLE_VALUE"},
        },
        "distributed": None,
        "max_run_duration_seconds": 2592000,
        "environment_variables": {},
    }
    assert json.loads(json.dumps(sub)) == sub

    system_managed_env = Environment("system-managed-env")
    system_managed_env.python.user_managed_dependencies = False
    cd = CondaDependencies.create(conda_packages=["scikit-learn"])
    system_managed_env.python.conda_dependencies = cd
    src.run_config.environment = system_managed_env
    env = src.to_submission()["environment"]
    assert (env["name"], env["user_managed"]) == ("system-managed-env", False)
    assert (env["pip"], env["conda"], env["python_version"]) == ([], ["scikit-learn"], "3.9.12")
    assert list(cd.pip_packages) == ["azureml-defaults"]  # kept, just not installed

    docker_env = Environment("docker-env")
    docker_env.python.user_managed_dependencies = False
    docker_env.docker.enabled = True
    docker_env.python.conda_dependencies = cd
    src.run_config.environment = docker_env
    env = src.to_submission()["environment"]
    assert (env["docker"], env["base_image"], env["conda"]) == (
        True, DEFAULT_CPU_IMAGE, ["scikit-learn"],
    )


def test_docker_from_the_run_or_the_environment() -> None:
    env = Environment("e")
    src = ScriptRunConfig(
        ".", script="t.py", environment=env,
        docker_runtime_config=DockerConfiguration(use_docker=True, arguments=["--gpus", "all"],
                                                  shm_size="8g"),
    )
    sub = src.to_submission()["environment"]
    assert (sub["docker"], sub["docker_shm_size"], sub["docker_arguments"]) == (
        True, "8g", ["--gpus", "all"],
    )
    with pytest.raises(TypeError, match="docker_runtime_config must be a DockerConfiguration"):
        ScriptRunConfig(".", script="t.py", docker_runtime_config={"use_docker": True})  # type: ignore[arg-type]


def test_environment_docker_settings_are_copied_at_construction(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = Environment("e")
    with caplog.at_level(logging.WARNING):
        env.docker.enabled = True
    assert "'enabled' is deprecated" in caplog.text
    src = ScriptRunConfig(".", script="t.py", environment=env)
    assert src.run_config.docker.use_docker is True  # as Azure copies them


def test_variables_of_environment_and_run() -> None:
    env = Environment("e")
    env.environment_variables = {"A": "env", "N": 3}
    src = ScriptRunConfig(".", script="t.py", environment=env)
    src.run_config.environment_variables = {"A": "run", "FLAG": True}
    sub = src.to_submission()
    assert sub["environment"]["variables"] == {"A": "env", "N": "3"}
    assert sub["environment_variables"] == {"A": "run", "FLAG": "True"}
    src.run_config.environment_variables = {"A=B": "x"}
    with pytest.raises(ValueError, match="must not contain '='"):
        src.to_submission()


def test_with_run_config_the_other_arguments_are_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rc = RunConfiguration(script="from_rc.py", arguments=["--rc"])
    rc.target = "cluster"
    with caplog.at_level(logging.WARNING):
        src = ScriptRunConfig(".", run_config=rc, compute_target="other",
                              environment=Environment("ignored"), max_run_duration_seconds=5)
    assert "the following parameters will be ignored" in caplog.text
    assert src.run_config is rc
    assert (src.script, src.arguments) == ("from_rc.py", ["--rc"])
    sub = src.to_submission()
    assert (sub["target"], sub["max_run_duration_seconds"]) == ("cluster", None)
    assert sub["environment"]["name"] == "default-environment"

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        src = ScriptRunConfig(".", script="mine.py", arguments=["--mine"], run_config=rc)
    assert "'script' provided in ScriptRunConfig initialization will take precedence" in (
        caplog.text
    )
    assert src.to_submission()["script"] == "mine.py"
    assert src.to_submission()["arguments"] == ["--mine"]
    with pytest.raises(TypeError, match="run_config must be a RunConfiguration"):
        ScriptRunConfig(".", script="t.py", run_config={"target": "x"})  # type: ignore[arg-type]


def test_distributed_job_configs() -> None:
    def submit(config: Any) -> Any:
        src = ScriptRunConfig(".", script="t.py", distributed_job_config=config)
        return src.run_config, src.to_submission()["distributed"]

    rc, sub = submit(PyTorchConfiguration("Gloo", node_count=2))
    assert (rc.framework, rc.communicator, rc.node_count) == ("PyTorch", "gloo", 2)
    assert sub == {"kind": "pytorch", "backend": "gloo", "node_count": 2, "process_count": 2}
    _, sub = submit(PyTorchConfiguration(process_count=8, node_count=2))
    assert sub == {"kind": "pytorch", "backend": "nccl", "node_count": 2, "process_count": 8}
    rc, sub = submit(MpiConfiguration(process_count_per_node=4, node_count=2))
    assert (rc.framework, rc.communicator) == ("Python", "IntelMpi")
    assert sub == {"kind": "mpi", "node_count": 2, "process_count_per_node": 4,
                   "process_count": 8}
    rc, sub = submit(TensorflowConfiguration(worker_count=3, parameter_server_count=1))
    assert (rc.framework, rc.communicator, rc.node_count) == ("TensorFlow", "ParameterServer", 3)
    assert sub == {"kind": "tensorflow", "node_count": 3, "worker_count": 3,
                   "parameter_server_count": 1}
    with pytest.raises(TypeError, match="distributed_job_config must be a PyTorchConfiguration"):
        submit({"kind": "pytorch"})
    src = ScriptRunConfig(".", script="t.py")
    src.run_config.node_count = 4
    with pytest.raises(ValueError, match="node_count is 4 but the run is not distributed"):
        src.to_submission()


def test_unsupported_and_meaningless_arguments() -> None:
    with pytest.raises(ValueError, match="resume_from takes an Azure DataPath"):
        ScriptRunConfig(".", script="t.py", resume_from="azureml://datastore/x")
    with pytest.raises(ValueError, match="max_run_duration_seconds must be at least 1"):
        ScriptRunConfig(".", script="t.py", max_run_duration_seconds=0)
    src = ScriptRunConfig(".", script="t.py", max_run_duration_seconds=None,
                          _telemetry_values={"x": 1})
    assert src.to_submission()["max_run_duration_seconds"] is None
    with pytest.raises(TypeError, match="environment must be an Environment"):
        ScriptRunConfig(".", script="t.py", environment="my-env")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="source_directory must be a str or path"):
        ScriptRunConfig(None, script="t.py")  # type: ignore[arg-type]


def test_environment_registry_calls_name_the_alternative() -> None:
    for call in (lambda: Environment.get(object(), "env"),
                 lambda: Environment("e").register(object()),
                 lambda: Environment.list(object())):
        with pytest.raises(NotImplementedError, match=r"no environment registry.*in code"):
            call()


def test_clone() -> None:
    env = Environment("a")
    env.version = "3"
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=["numpy"])
    twin = env.clone("b")
    assert (twin.name, twin.version) == ("b", None)
    assert twin.python.conda_dependencies is not None
    twin.python.conda_dependencies.add_pip_package("scipy")
    assert list(env.python.conda_dependencies.pip_packages) == ["numpy"]


# ---- typos fail loudly --------------------------------------------------------------------


CONFIG_OBJECTS: list[Callable[[], Any]] = [
    lambda: ScriptRunConfig(".", script="t.py"), RunConfiguration, lambda: Environment("e"),
    PythonSection, DockerSection, CondaDependencies, PyTorchConfiguration, MpiConfiguration,
    TensorflowConfiguration, DockerConfiguration,
]


@pytest.mark.parametrize("make", CONFIG_OBJECTS)
def test_unknown_attributes_raise(make: Callable[[], Any]) -> None:
    obj = make()
    assert not hasattr(obj, "__dict__")
    with pytest.raises(AttributeError, match=f"^{type(obj).__name__} has no attribute 'typo_x'"):
        obj.typo_x = 1
    copy.deepcopy(obj)  # slots copy fine


def test_typo_messages_suggest_the_attribute() -> None:
    rc = RunConfiguration()
    with pytest.raises(AttributeError, match="'tagret'; did you mean 'target'"):
        rc.tagret = "x"  # type: ignore[attr-defined]
    env = Environment("e")
    with pytest.raises(AttributeError, match="did you mean 'user_managed_dependencies'"):
        env.python.user_managed = True  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="DockerSection has no attribute 'base_dockerfile'"):
        env.docker.base_dockerfile = "FROM x"  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="did you mean 'arguments'"):
        ScriptRunConfig(".", script="t.py").argument = ["x"]  # type: ignore[attr-defined]
    rc.environment = env  # a real attribute is plainly assignable
    assert rc.environment is env


# ---- CondaDependencies ---------------------------------------------------------------------


def test_create_like_azure() -> None:
    cd = CondaDependencies.create(conda_packages=["scikit-learn"])
    assert list(cd.conda_packages) == ["python=3.9.12", "scikit-learn"]
    assert list(cd.pip_packages) == ["azureml-defaults"]
    cd = CondaDependencies.create(
        pip_packages=["numpy==1.26.*", "azureml-core", "azureml_dataset_runtime[fuse]"],
        conda_packages=["python=3.10", "pandas"], python_version="3.11",
        pip_indexurl="https://mirror.example/simple",
    )
    assert cd.get_python_version() == "3.10"  # a conda python= spec sets the version
    assert list(cd.conda_packages) == ["python=3.10", "pandas"]
    assert list(cd.pip_packages) == [
        "numpy==1.26.*", "azureml-core", "azureml_dataset_runtime[fuse]",  # not pinned
    ]
    assert list(cd.pip_options) == ["--extra-index-url https://mirror.example/simple"]
    env = Environment("e")
    env.python.conda_dependencies = cd
    sub = ScriptRunConfig(".", script="t.py", environment=env).to_submission()["environment"]
    assert sub["pip"] == ["numpy==1.26.*"]  # azureml-* left out
    assert sub["pip_options"] == ["--extra-index-url https://mirror.example/simple"]
    assert (sub["conda"], sub["python_version"]) == (["pandas"], "3.10")
    assert list(CondaDependencies.create(pip_packages=[]).pip_packages) == []


def test_editing_packages() -> None:
    cd = CondaDependencies()
    cd.add_pip_package("numpy==1.0")
    cd.add_pip_package("NumPy>=2")  # the same package: replaced, moved to the end
    cd.add_pip_package("torch")
    assert list(cd.pip_packages) == ["azureml-defaults", "NumPy>=2", "torch"]
    cd.remove_pip_package("numpy")
    assert list(cd.pip_packages) == ["azureml-defaults", "torch"]
    cd.set_pip_option("--index-url https://a")
    cd.set_pip_option("--index-url https://b")
    assert list(cd.pip_options) == ["--index-url https://b"]
    cd.remove_pip_option("--index-url")
    assert list(cd.pip_options) == []
    cd.add_conda_package("pandas")
    cd.add_conda_package("pandas")
    cd.remove_conda_package("pandas")
    assert list(cd.conda_packages) == ["python=3.8.13"]
    cd.add_channel("pytorch")
    cd.remove_channel("anaconda")
    assert list(cd.conda_channels) == ["conda-forge", "pytorch"]
    cd.set_pip_requirements(["a", "--pre", "b"])
    assert (list(cd.pip_packages), list(cd.pip_options)) == (["a", "b"], ["--pre"])
    with pytest.raises(ValueError, match="Invalid package name --pre"):
        cd.add_pip_package("--pre")
    with pytest.raises(ValueError, match="Invalid pip option numpy"):
        cd.set_pip_option("numpy")
    with pytest.raises(ValueError, match="python must not be removed"):
        cd.remove_conda_package("python=3.8.13")
    with pytest.raises(TypeError, match="pip_requirements must be a list of str"):
        cd.set_pip_requirements("numpy")
    packages = cd.pip_packages
    assert not isinstance(packages, list)  # an iterator over a copy, as in Azure
    as_dict = cd.as_dict()
    as_dict["channels"].append("changed")
    assert "changed" not in list(cd.conda_channels)


def test_pip_version_and_python_are_not_conda_packages_for_the_agent() -> None:
    cd = CondaDependencies()
    cd.add_conda_package("pip=23.0")
    cd.add_conda_package("numpy=1.21")
    env = Environment("e")
    env.python.conda_dependencies = cd
    sub = ScriptRunConfig(".", script="t.py", environment=env).to_submission()["environment"]
    assert (sub["python_version"], sub["pip_version"], sub["conda"]) == (
        "3.8.13", "23.0", ["numpy=1.21"],
    )


def test_conda_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "environment.yml"
    path.write_text(
        "# exported\n"
        "name: train  # the env\n"
        "channels:\n"
        "  - conda-forge\n"
        "dependencies:\n"
        "  - python=3.10.4\n"
        "  - numpy=1.26\n"
        "  - pip\n"
        "  - pip:\n"
        "    - torch==2.2.0\n"
        "    - '--extra-index-url https://download.pytorch.org/whl/cpu'\n"
        "    - \"tqdm>=4 ; python_version >= '3.8'\"\n"
        "  - scipy\n"
        "variables:\n"
        "  OMP_NUM_THREADS: '4'\n",
        encoding="utf-8",
    )
    cd = CondaDependencies(path)
    assert cd.as_dict() == {
        "name": "train",
        "channels": ["conda-forge"],
        "dependencies": [
            "python=3.10.4", "numpy=1.26", "pip",
            {"pip": ["torch==2.2.0", "--extra-index-url https://download.pytorch.org/whl/cpu",
                     "tqdm>=4 ; python_version >= '3.8'"]},
            "scipy",
        ],
        "variables": {"OMP_NUM_THREADS": "4"},
    }
    again = tmp_path / "again.yml"
    again.write_text(cd.serialize_to_string(), encoding="utf-8")
    assert CondaDependencies(again).as_dict() == cd.as_dict()
    env = Environment.from_conda_specification("train", path)
    assert env.python.conda_dependencies.get_python_version() == "3.10.4"  # type: ignore[union-attr]
    assert CondaDependencies(_underlying_structure=cd.as_dict()).as_dict() == cd.as_dict()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nbuild: y\n", "expected one of name, channels"),
        ("dependencies: [numpy]\n", "YAML this reader does not handle"),
        ("dependencies:\n  - pip: [torch]\n", "YAML this reader does not handle"),
        ("dependencies:\n  numpy: 1\n", r"expected a '- item' under dependencies"),
        ("  - numpy\n", "belongs to no key"),
    ],
)
def test_conda_file_outside_the_subset_is_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "env.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        CondaDependencies(path)
    with pytest.raises(ValueError, match="unknown build key in environment specification"):
        CondaDependencies(_underlying_structure={"build": 1})


def test_from_pip_requirements(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text(
        "# training\n"
        "\n"
        "numpy>=1.21  # inline comment\n"
        "   \n"
        "scikit-learn==1.3.* \\\n"
        "    ; python_version >= '3.9'\n"
        "--extra-index-url https://mirror.example/simple\n"
        "git+https://github.com/org/lib.git@v1#egg=lib\n"
        "azureml-defaults\n",
        encoding="utf-8",
    )
    env = Environment.from_pip_requirements("reqs", os.fspath(path))
    cd = env.python.conda_dependencies
    assert cd is not None
    assert list(cd.pip_packages) == [
        "numpy>=1.21",
        "scikit-learn==1.3.*     ; python_version >= '3.9'",
        "git+https://github.com/org/lib.git@v1#egg=lib",
        "azureml-defaults",
    ]
    assert list(cd.pip_options) == ["--extra-index-url https://mirror.example/simple"]
    assert list(cd.conda_packages) == ["python=3.8.13", "pip"]
    sub = ScriptRunConfig(".", script="t.py", environment=env).to_submission()["environment"]
    assert sub["pip"] == list(cd.pip_packages)[:3]
    assert (sub["pip_version"], sub["conda"]) == (None, [])
    pinned = Environment.from_pip_requirements("reqs", path, pip_version="23.3")
    assert "pip=23.3" in list(pinned.python.conda_dependencies.conda_packages)  # type: ignore[union-attr]

    path.write_text("numpy\n-r other.txt\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2: '-r other.txt' names another file"):
        Environment.from_pip_requirements("reqs", path)
