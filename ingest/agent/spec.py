"""What a submission's spec (``ScriptRunConfig.to_submission()``, documented there) means
on this machine, as pure functions: the argv, the process count and each rank's
variables, the process environment, the cache key of a built environment, conda specs
as pip requirements, and the error text of a failed process.

Nothing here starts a process or touches the network; ``runner.py`` and ``envs.py`` do.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SCRUBBED_VARIABLES",
    "SpecError",
    "command_argv",
    "conda_to_pip",
    "environment_key",
    "exit_text",
    "failure_text",
    "process_count",
    "rank_variables",
    "run_environment",
]

#: Lines of a failed process's stderr kept for the run's error (the traceback's end).
STDERR_TAIL_LINES = 40

#: Variables of the agent's own environment that a run's processes never inherit: the
#: server's credentials (an agent needs neither, but may run next to a server).
SCRUBBED_VARIABLES = ("RUNSTREAM_DB", "RUNSTREAM_WORKSPACE_TOKENS", "RUNSTREAM_AGENT_TOKENS")


class SpecError(ValueError):
    """The submission cannot run here; the message says why (the run fails in Preparing)."""


def _strings(value: object, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{what} must be a list of strings, not {value!r}")
    return list(value)


def command_argv(spec: Mapping[str, Any], interpreter: str) -> list[str]:
    """The argv of the run's process, verbatim: ``[interpreter, script, *arguments]``,
    the ``command`` list as it is, or ``/bin/sh -c <shell_command>`` (the only case
    that goes through a shell)."""
    shell_command = spec.get("shell_command")
    command = spec.get("command")
    script = spec.get("script")
    if sum(x is not None for x in (shell_command, command, script)) != 1:
        raise SpecError("the spec must set exactly one of script, command and shell_command")
    if shell_command is not None:
        if not isinstance(shell_command, str) or not shell_command.strip():
            raise SpecError(f"shell_command must be a non-empty string, not {shell_command!r}")
        return ["/bin/sh", "-c", shell_command]
    if command is not None:
        argv = _strings(command, "command")
        if not argv or not argv[0]:
            raise SpecError("command must be a non-empty list whose first item names a program")
        return argv
    if not isinstance(script, str) or not script:
        raise SpecError(f"script must be a non-empty string, not {script!r}")
    return [interpreter, script, *_strings(spec.get("arguments"), "arguments")]


def process_count(spec: Mapping[str, Any]) -> int:
    """How many processes (ranks) the run starts on this agent: 1 unless ``distributed``
    asks for more (all of them run here: an agent is one node of its target)."""
    distributed = spec.get("distributed")
    if distributed is None:
        return 1
    if not isinstance(distributed, Mapping):
        raise SpecError(f"distributed must be an object, not {distributed!r}")
    kind = distributed.get("kind")

    def given(name: str, default: object) -> object:
        value = distributed.get(name)
        return default if value is None else value

    count: object
    if kind == "pytorch":
        count = given("process_count", given("node_count", 1))
    elif kind == "mpi":
        per_node, nodes = given("process_count_per_node", 1), given("node_count", 1)
        if type(per_node) is not int or type(nodes) is not int:
            raise SpecError(f"mpi process_count_per_node and node_count must be ints: "
                            f"{distributed!r}")
        count = given("process_count", per_node * nodes)
    elif kind == "tensorflow":
        raise SpecError(
            "distributed TensorFlow (parameter servers and TF_CONFIG) is not supported by "
            "this agent; use PyTorchConfiguration or MpiConfiguration"
        )
    else:
        raise SpecError(f"unknown distributed kind {kind!r}")
    if type(count) is not int or count < 1:
        raise SpecError(f"distributed process count must be a positive int, not {count!r}")
    return count


def rank_variables(
    rank: int, world_size: int, *, master_port: int | None, distributed: bool
) -> dict[str, str]:
    """The variables that tell a process its rank: always ``RUNSTREAM_RANK`` and
    ``RUNSTREAM_WORLD_SIZE`` (the SDK's); for a distributed run also PyTorch's
    ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``NODE_RANK``,
    ``MASTER_ADDR`` and ``MASTER_PORT`` (all ranks are local)."""
    found = {"RUNSTREAM_RANK": str(rank), "RUNSTREAM_WORLD_SIZE": str(world_size)}
    if distributed:
        found.update({
            "RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(world_size),
            "NODE_RANK": "0",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(master_port),
        })
    return found


def _variables(value: object, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise SpecError(f"{what} must map names to strings, not {value!r}")
    for name in value:
        if not name or "=" in name or "\0" in name:
            raise SpecError(f"{what}: {name!r} is not a valid environment variable name")
    return dict(value)


def run_environment(
    base: Mapping[str, str],
    spec: Mapping[str, Any],
    run_variables: Mapping[str, str],
    *,
    path_prefix: Sequence[str] = (),
) -> dict[str, str]:
    """The process environment of a run, in the contract's order: the agent's own
    (without ``SCRUBBED_VARIABLES``; ``PYTHONUNBUFFERED=1`` so output arrives as it is
    printed), then ``environment.variables``, then ``environment_variables``, then
    ``run_variables`` (``RUNSTREAM_*``, ranks), which always win. ``path_prefix``
    directories go in front of ``PATH`` (the environment's ``bin``)."""
    env = {k: v for k, v in base.items() if k not in SCRUBBED_VARIABLES}
    env["PYTHONUNBUFFERED"] = "1"
    environment = spec.get("environment") or {}
    env.update(_variables(environment.get("variables"), "environment.variables"))
    env.update(_variables(spec.get("environment_variables"), "environment_variables"))
    env.update(run_variables)
    if path_prefix:
        env["PATH"] = ":".join([*path_prefix, *filter(None, [env.get("PATH")])])
    return env


def environment_key(environment: Mapping[str, Any], python: str, python_version: str) -> str:
    """The cache key of a built (not user-managed) environment: a hash of what goes into
    it — the pip list, its options, the pip version, the conda packages — and of the
    interpreter it is built from. Order matters (pip resolves in the order given)."""
    content = {
        "pip": list(environment.get("pip") or []),
        "pip_options": list(environment.get("pip_options") or []),
        "pip_version": environment.get("pip_version"),
        "conda": list(environment.get("conda") or []),
        "python": python,
        "python_version": python_version,
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


_CONDA_NAME = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?P<rest>.*)", re.DOTALL)


def conda_to_pip(spec: str) -> str | None:
    """A conda package spec as a pip requirement, or None for ``python`` itself (the
    interpreter is the agent's). ``numpy`` → ``numpy``; ``numpy=1.21`` (conda's prefix
    match) → ``numpy==1.21.*``; ``numpy=1.21.2=py39h_0`` (with a build string) →
    ``numpy==1.21.2``; ``numpy 1.21`` → ``numpy==1.21.*``; ``numpy>=1.2,<2`` as it is;
    ``conda-forge::numpy`` drops the channel. What does not parse goes to pip as it is
    (pip then names it)."""
    text = spec.strip()
    if "::" in text:
        text = text.split("::", 1)[1]
    match = _CONDA_NAME.fullmatch(text)
    if match is None:
        return spec.strip()
    name, rest = match["name"], match["rest"].replace(" ", "")
    if name.lower() == "python":
        return None
    if not rest:
        return name
    if rest[0].isdigit():
        rest = "=" + rest
    if rest.startswith("=") and not rest.startswith("=="):
        version, _, build = rest[1:].partition("=")
        if build or version.endswith("*"):
            return f"{name}=={version}"
        return f"{name}=={version}.*"
    return name + rest


def exit_text(returncode: int) -> str:
    """``exit code N``, or the signal that ended the process."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name} (exit code {returncode})"
    return f"exit code {returncode}"


@dataclass(frozen=True)
class RankExit:
    rank: int
    returncode: int
    stderr_tail: Sequence[str]


def failure_text(failed: RankExit, world_size: int, *, note: str | None = None) -> str:
    """The run's error for a failed process: ``exit code N`` (``rank R: `` first when
    several ranks ran), then its last stderr lines, which hold the traceback."""
    head = exit_text(failed.returncode)
    if world_size > 1:
        head = f"rank {failed.rank}: {head}"
    if note:
        head = f"{head}; {note}"
    tail = list(failed.stderr_tail)[-STDERR_TAIL_LINES:]
    return head + ("\n" + "\n".join(tail) if tail else "")


def pip_problems(lines: Iterable[str]) -> list[str]:
    """Requirements pip's output says it could not install."""
    found: list[str] = []
    patterns = (
        r"No matching distribution found for (\S+)",
        r"Could not find a version that satisfies the requirement (\S+)",
        r"Invalid requirement: '?([^'\s]+)'?",
    )
    for line in lines:
        for pattern in patterns:
            match = re.search(pattern, line)
            if match and match[1] not in found:
                found.append(match[1])
    return found
