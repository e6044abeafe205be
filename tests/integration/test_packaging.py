"""The wheel as a user installs it, outside the checkout.

``pip install runstream`` is the SDK alone: ``import producer`` works with none of the
server's dependencies, and the CLI says which extra a server command needs. With the
server's dependencies present, the installed wheel (not this checkout) runs ``runstream
up``, ``demo`` and ``down`` on a throwaway stack of its own: the Kafka pom and the
migrations travel as package data.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.stack.postgres import LocalPostgres
from tests.integration.helpers import port_clash, private_env

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SERVER_MODULES = ("asyncpg", "aiohttp", "prometheus_client", "psutil")


def run(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          check=False, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                 str(ROOT)], cwd=out)
    assert built.returncode == 0, built.stderr
    (found,) = out.glob("runstream-*.whl")
    return found


def venv(path: Path, *, our_packages: bool) -> Path:
    """A fresh virtualenv; with ``our_packages`` it also sees this interpreter's installed
    packages (the server's dependencies), after its own. ``--system-site-packages`` would
    give the base interpreter's instead when this one is itself a virtualenv (``make``'s
    ``.venv``): the folders are named in a ``.pth`` file — plain path entries, so their
    own ``.pth`` files (this checkout's editable install) are not run."""
    made = run([sys.executable, "-m", "venv", str(path)], cwd=path.parent)
    assert made.returncode == 0, made.stderr
    if our_packages:
        (own,) = (path / "lib").glob("python*/site-packages")
        (own / "_outer_packages.pth").write_text("".join(f"{p}\n" for p in site.getsitepackages()))
    return path / "bin"


def test_the_plain_install_is_the_sdk_alone(wheel: Path, tmp_path: Path) -> None:
    bin_dir = venv(tmp_path / "sdk", our_packages=False)
    installed = run([str(bin_dir / "pip"), "install", "-q", "--disable-pip-version-check",
                     str(wheel)], cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    probe = (
        "import importlib.util, json, producer\n"
        f"print(json.dumps({{m: importlib.util.find_spec(m) is not None "
        f"for m in {SERVER_MODULES!r}}}))\n"
        "print(producer.__file__)"
    )
    seen = run([str(bin_dir / "python"), "-c", probe], cwd=tmp_path)
    assert seen.returncode == 0, seen.stderr
    found, location = seen.stdout.splitlines()
    assert json.loads(found) == dict.fromkeys(SERVER_MODULES, False)
    assert location.startswith(str(tmp_path / "sdk"))
    helped = run([str(bin_dir / "runstream"), "--help"], cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    refused = run([str(bin_dir / "runstream"), "status"], cwd=tmp_path)
    assert refused.returncode == 2
    assert "needs the 'server' extra" in refused.stderr
    assert "pip install 'runstream[server]'" in refused.stderr


@pytest.fixture
def private_homes(tmp_path: Path) -> Iterator[list[dict[str, str]]]:
    tried: list[dict[str, str]] = []
    yield tried
    for env in tried:
        run([sys.executable, "-m", "ingest.cli", "down"], cwd=ROOT, env=env)
        pg = LocalPostgres(home=Path(env["RUNSTREAM_HOME"]), port=int(env["RUNSTREAM_PG_PORT"]))
        if pg.dir.is_relative_to("/var/lib/runstream"):
            shutil.rmtree(pg.dir, ignore_errors=True)


def test_an_installed_wheel_runs_up_demo_and_down_outside_the_checkout(
    wheel: Path, tmp_path: Path, private_homes: list[dict[str, str]]
) -> None:
    # The server's dependencies come from this interpreter's site-packages; runstream
    # itself only from the wheel installed into the venv.
    bin_dir = venv(tmp_path / "server", our_packages=True)
    installed = run([str(bin_dir / "pip"), "install", "-q", "--no-deps",
                     "--disable-pip-version-check", str(wheel)], cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = run([str(bin_dir / "python"), "-c", "import ingest; print(ingest.__file__)"],
                cwd=outside)
    assert where.stdout.strip().startswith(str(tmp_path / "server")), where.stdout
    runstream = str(bin_dir / "runstream")
    for attempt in range(3):
        home = tmp_path / f"home{attempt}"
        env = {k: v for k, v in private_env(home).items() if k != "PYTHONPATH"}
        private_homes.append(env)
        up = run([runstream, "up", "--json"], cwd=outside, env=env)
        if up.returncode == 0 or not port_clash(up, home):
            break
        run([runstream, "down"], cwd=outside, env=env)
    assert up.returncode == 0, up.stderr
    status = json.loads(up.stdout)
    assert all(component["ok"] for component in status.values()), status
    demo = run([runstream, "demo"], cwd=outside, env=env)
    assert demo.returncode == 0, demo.stderr
    assert "9 runs (9 Completed)" in demo.stdout
    down = run([runstream, "down"], cwd=outside, env=env)
    assert down.returncode == 0, down.stderr
    assert "kafka" in down.stdout
    assert "postgres" in down.stdout
    assert not any(
        env["RUNSTREAM_HOME"] in (p / "cmdline").read_bytes().decode(errors="replace")
        for p in Path("/proc").iterdir() if p.name.isdigit() and (p / "cmdline").exists()
    )
    assert os.path.exists(home / "stack" / "kafka")
