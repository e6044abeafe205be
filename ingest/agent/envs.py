"""A run's Python environment on the agent (the spec's ``environment``).

- ``docker: true`` fails the run: this agent runs processes on its host, not containers.
- ``user_managed``: the ``interpreter`` as it is ("python", the default, is the agent's
  own ``sys.executable``; another name is looked up on ``PATH``); nothing is installed.
- Otherwise a virtualenv is built once per content hash (``spec.environment_key``: the
  pip list, its options, the pip version, the conda packages, the interpreter) under
  ``<root>/<hash>`` and reused: ``python -m venv --system-site-packages`` (so the
  Runstream SDK and what the agent's Python has stay importable; when the agent itself
  runs in a virtualenv, a ``.pth`` file adds that one's site-packages too), then
  ``pip install`` of ``pip_options`` + ``pip`` as one requirements file, then the conda
  packages as pip requirements (agents have no conda). What pip cannot install fails the
  run, naming the packages. A ``<hash>.lock`` file (``flock``) makes two runs — of this
  agent or another on the same work dir — build one environment once; a build that did
  not finish leaves no ready marker and is redone.

Every line the build prints goes to the run's log (``log``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.util
import json
import os
import platform
import shutil
import site
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.agent.procs import Watchdog, kill_group, pump_lines, spawn
from ingest.agent.spec import (
    SCRUBBED_VARIABLES,
    conda_to_pip,
    environment_key,
    exit_text,
    pip_problems,
)

__all__ = ["EnvironmentCache", "PrepareError", "Prepared"]

READY = ".runstream-env.json"
#: Lines of pip's output kept in the run's error when an install fails.
PIP_TAIL_LINES = 20


class PrepareError(Exception):
    """The run cannot start; the message is its error (status Failed, in Preparing)."""


@dataclass(frozen=True)
class Prepared:
    """How to start a run's processes: the interpreter, directories to put in front of
    ``PATH``, variables to add, and what an operator should read about it."""

    interpreter: str
    path_prefix: tuple[str, ...] = ()
    variables: Mapping[str, str] = field(default_factory=dict)
    description: str = ""


class EnvironmentCache:
    def __init__(
        self,
        root: Path,
        *,
        python: str = sys.executable,
        watchdog: Watchdog | None = None,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root
        self.python = python
        self.watchdog = watchdog
        self.base_env = dict(os.environ if base_env is None else base_env)

    def key(self, environment: Mapping[str, Any]) -> str:
        return environment_key(environment, self.python, platform.python_version())

    async def prepare(
        self, environment: Mapping[str, Any], log: Callable[[str], None]
    ) -> Prepared:
        if environment.get("docker"):
            image = environment.get("base_image")
            raise PrepareError(
                "this agent cannot run containers: the environment asks for Docker"
                + (f" (image {image})" if image else "")
                + "; set environment.docker.enabled = False (and use_docker False) to run on "
                "the agent's host, or submit to a target whose agents run Docker"
            )
        if environment.get("user_managed", True):
            return self._user_managed(str(environment.get("interpreter") or "python"))
        return await self._built(environment, log)

    def _user_managed(self, interpreter: str) -> Prepared:
        if interpreter == "python":
            return Prepared(
                sys.executable,
                (str(Path(sys.executable).parent),),
                description=f"the agent's own Python ({sys.executable})",
            )
        found = shutil.which(interpreter, path=self.base_env.get("PATH"))
        if found is None:
            raise PrepareError(
                f"interpreter {interpreter!r} (environment.python.interpreter_path) is not "
                "an executable file on this agent"
            )
        return Prepared(found, description=f"user-managed interpreter {found}")

    async def _built(
        self, environment: Mapping[str, Any], log: Callable[[str], None]
    ) -> Prepared:
        key = self.key(environment)
        home = self.root / key
        prepared = Prepared(
            str(home / "bin" / "python"),
            (str(home / "bin"),),
            {"VIRTUAL_ENV": str(home)},
            description=f"environment {key}",
        )
        wish = environment.get("python_version")
        if wish and not platform.python_version().startswith(str(wish)):
            log(f"runstream agent: python {wish} was asked for; this agent builds with "
                f"Python {platform.python_version()} ({self.python})")
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / f"{key}.lock").open("a") as lock:
            await self._lock(lock, key, log)
            try:
                if (home / READY).is_file():
                    log(f"runstream agent: using cached environment {key}")
                    return prepared
                log(f"runstream agent: building environment {key} in {home}")
                await self._build(environment, home, log)
                (home / READY).write_text(json.dumps({"key": key, **environment}, indent=1))
                log(f"runstream agent: environment {key} ready")
                return prepared
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    async def _lock(self, lock: Any, key: str, log: Callable[[str], None]) -> None:
        said = False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if not said:
                    log(f"runstream agent: waiting for another run that builds environment {key}")
                    said = True
                await asyncio.sleep(0.2)

    async def _build(
        self, environment: Mapping[str, Any], home: Path, log: Callable[[str], None]
    ) -> None:
        await asyncio.to_thread(shutil.rmtree, home, ignore_errors=True)  # an unfinished build
        venv = [self.python, "-m", "venv", "--system-site-packages"]
        if importlib.util.find_spec("pip") is not None:
            venv.append("--without-pip")  # the agent's pip is importable through site-packages
        code, lines = await self._step([*venv, str(home)], log)
        if code != 0:
            raise PrepareError(f"python -m venv failed ({exit_text(code)}):\n" + _tail(lines))
        self._link_agent_site(home)
        python = str(home / "bin" / "python")
        pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
        pip_version = environment.get("pip_version")
        if pip_version:
            requirement = conda_to_pip(f"pip={pip_version}") or "pip"
            code, lines = await self._step([*pip, requirement], log)
            if code != 0:
                raise PrepareError(f"pip could not install {requirement}:\n" + _tail(lines))
        requirements = [*(environment.get("pip_options") or []), *(environment.get("pip") or [])]
        if environment.get("pip"):
            file = home / "requirements.txt"
            file.write_text("".join(f"{line}\n" for line in requirements))
            code, lines = await self._step([*pip, "-r", str(file)], log)
            if code != 0:
                named = pip_problems(lines) or list(environment.get("pip") or [])
                raise PrepareError(
                    f"pip could not install {', '.join(named)} ({exit_text(code)}):\n"
                    + _tail(lines)
                )
        conda = [r for r in map(conda_to_pip, environment.get("conda") or []) if r]
        if conda:
            await self._conda(pip, conda, environment.get("pip_options") or [], log)

    async def _conda(
        self, pip: list[str], conda: list[str], options: Sequence[str], log: Callable[[str], None]
    ) -> None:
        """Conda packages through pip: all at once, and when that fails, one by one to
        name those pip cannot install."""
        flags = [part for option in options for part in option.split()]
        log(f"runstream agent: agents have no conda; installing {', '.join(conda)} with pip")
        code, lines = await self._step([*pip, *flags, *conda], log)
        if code == 0:
            return
        failed: list[str] = []
        for requirement in conda:
            single, _ = await self._step([*pip, *flags, requirement], log)
            if single != 0:
                failed.append(requirement)
        raise PrepareError(
            f"conda packages pip could not install: {', '.join(failed or conda)} (agents "
            "have no conda; give them as pip packages, or use a user-managed environment "
            "that has them):\n" + _tail(lines)
        )

    def _link_agent_site(self, home: Path) -> None:
        """When the agent's Python is itself a virtualenv, ``--system-site-packages`` sees
        its base, not it: a ``.pth`` file adds the agent's site-packages (once)."""
        if sys.prefix == sys.base_prefix:
            return
        ours = [p for p in site.getsitepackages() if p.startswith(sys.prefix)]
        # One import line per directory: site exec()s each line in its own function, where
        # a comprehension would not see the names the line imported. addsitedir skips a
        # directory already on sys.path.
        lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in ours)
        for target in (home / "lib").glob("python*/site-packages"):
            (target / "_runstream_agent_site.pth").write_text(lines)

    async def _step(
        self, argv: Sequence[str], log: Callable[[str], None]
    ) -> tuple[int, list[str]]:
        """Run one build command, its output lines to ``log``; (exit code, lines)."""
        lines: list[str] = []

        def line(text: str) -> None:
            lines.append(text)
            log(text)

        dropped = ("PYTHONPATH", "VIRTUAL_ENV", *SCRUBBED_VARIABLES)
        env = {k: v for k, v in self.base_env.items() if k not in dropped}
        env["PYTHONUNBUFFERED"] = "1"
        proc = await spawn(argv, cwd=self.root, env=env)
        with self._watched(proc.pid):
            try:
                await asyncio.gather(*(pump_lines(pipe, line)
                                       for pipe in (proc.stdout, proc.stderr) if pipe))
                code = await proc.wait()
            except BaseException:
                kill_group(proc.pid)
                with contextlib.suppress(Exception):
                    await asyncio.shield(proc.wait())
                raise
            finally:
                kill_group(proc.pid)
        return code, lines

    @contextlib.contextmanager
    def _watched(self, pgid: int) -> Iterator[None]:
        if self.watchdog is not None:
            self.watchdog.add(pgid)
        try:
            yield
        finally:
            if self.watchdog is not None:
                self.watchdog.remove(pgid)


def _tail(lines: Sequence[str]) -> str:
    return "\n".join(lines[-PIP_TAIL_LINES:])
