"""A run's environment on the agent: user-managed interpreters, and virtualenvs built
once per content hash (really built here with ``python -m venv``; pip runs offline)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ingest.agent.envs import READY, EnvironmentCache, PrepareError


def environment(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "e", "user_managed": False, "interpreter": "python", "python_version": None,
        "pip": [], "pip_options": [], "pip_version": None, "conda": [], "docker": False,
        "base_image": None, "variables": {},
    }
    base.update(over)
    return base


async def test_user_managed_python_is_the_agents_own(tmp_path: Path) -> None:
    cache = EnvironmentCache(tmp_path)
    prepared = await cache.prepare({"user_managed": True, "interpreter": "python"}, print)
    assert prepared.interpreter == sys.executable
    named = await cache.prepare({"user_managed": True, "interpreter": "sh"}, print)
    assert Path(named.interpreter).name == "sh"
    assert os.listdir(tmp_path) == []  # nothing built


async def test_a_virtualenv_is_built_once_and_sees_the_sdk(tmp_path: Path) -> None:
    cache = EnvironmentCache(tmp_path / "envs")
    logs: list[list[str]] = [[], [], []]
    env = environment(pip_options=["--no-index"])
    # Two runs at once: one builds, the other waits on the lock, then both use it.
    first, second = await asyncio.gather(cache.prepare(env, logs[0].append),
                                         cache.prepare(env, logs[1].append))
    assert first == second
    key = cache.key(env)
    assert first.interpreter == str(tmp_path / "envs" / key / "bin" / "python")
    assert first.variables == {"VIRTUAL_ENV": str(tmp_path / "envs" / key)}
    built = [log for log in logs[:2] if f"runstream agent: building environment {key} in "
             f"{tmp_path / 'envs' / key}" in log]
    assert len(built) == 1
    waited = logs[1] if built[0] is logs[0] else logs[0]
    assert f"runstream agent: using cached environment {key}" in waited
    third = await cache.prepare(env, logs[2].append)
    assert third == first
    assert logs[2] == [f"runstream agent: using cached environment {key}"]
    # The Runstream SDK (and what the agent's Python has) stays importable.
    probe = await asyncio.to_thread(
        subprocess.run, [first.interpreter, "-c", "import sys, producer; print(sys.prefix)"],
        capture_output=True, text=True, check=False,
    )
    assert probe.returncode == 0, probe.stderr
    # Nothing printed at start-up: an agent that is itself a virtualenv adds its own
    # site-packages with a .pth file, and a bad line there is printed by every process.
    assert probe.stderr == ""
    assert probe.stdout.strip() == str(tmp_path / "envs" / key)


async def test_an_unfinished_build_is_redone(tmp_path: Path) -> None:
    cache = EnvironmentCache(tmp_path)
    env = environment(pip_options=["--no-index"])
    prepared = await cache.prepare(env, print)
    home = Path(prepared.variables["VIRTUAL_ENV"])
    (home / READY).unlink()  # as if the agent died while building
    (home / "leftover").write_text("x")
    lines: list[str] = []
    assert await cache.prepare(env, lines.append) == prepared
    assert any(line.startswith("runstream agent: building environment") for line in lines)
    assert not (home / "leftover").exists()


async def test_pip_failures_name_the_packages(tmp_path: Path) -> None:
    cache = EnvironmentCache(tmp_path)
    lines: list[str] = []
    env = environment(pip=["surely-not-a-package-xyz==1.0"], pip_options=["--no-index"])
    with pytest.raises(PrepareError, match=r"^pip could not install "
                       r"surely-not-a-package-xyz==1\.0 \(exit code 1\):\n") as caught:
        await cache.prepare(env, lines.append)
    assert "No matching distribution found for surely-not-a-package-xyz==1.0" in str(caught.value)
    assert any("surely-not-a-package-xyz" in line for line in lines)  # the build's log
    assert not (tmp_path / cache.key(env) / READY).exists()


async def test_conda_packages_are_tried_with_pip(tmp_path: Path) -> None:
    cache = EnvironmentCache(tmp_path)
    lines: list[str] = []
    # "pip" is installed (the agent's, through site-packages); the other is not anywhere.
    env = environment(conda=["python=3.11", "pip", "conda-forge::no-such-conda-pkg=1.2"],
                      pip_options=["--no-index"])
    with pytest.raises(PrepareError) as caught:
        await cache.prepare(env, lines.append)
    message = str(caught.value)
    assert message.startswith("conda packages pip could not install: no-such-conda-pkg==1.2.* "
                              "(agents have no conda;")
    assert "runstream agent: agents have no conda; installing pip, no-such-conda-pkg==1.2.* " \
           "with pip" in lines


async def test_docker_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PrepareError, match="this agent cannot run containers"):
        await EnvironmentCache(tmp_path).prepare(environment(docker=True), print)
