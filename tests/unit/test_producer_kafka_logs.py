"""aiokafka's own log lines are folded into Runstream's one-line messages (issue 15,
item 5): a real process logs with Kafka pointed at a closed port, and its stderr holds
Runstream's messages, naming what the Kafka client said, and no line of aiokafka's.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer._kafka_logs import FOLD, SENDER_THREAD, held_back, install

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import logging, sys
    from producer import Experiment, Workspace
    if sys.argv[1] == "debug":
        logging.basicConfig(level=logging.DEBUG)   # asks for every library's details
    elif sys.argv[1] == "info":
        logging.basicConfig(level=logging.INFO)    # a script's usual logging set-up
    ws = Workspace.from_env()
    run = Experiment(ws, "offline").start_logging(outputs_dir=None)
    for step in range(3):
        run.log("loss", 1.0 / (step + 1), step=step)
    run.complete()
    print("script done", flush=True)
""")


def closed_port() -> int:
    """A local port nothing listens on (bound, then released: connects are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def run_offline(tmp_path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    port = closed_port()
    env = {
        **os.environ,
        "RUNSTREAM_HOME": str(tmp_path / "home"),
        "RUNSTREAM_KAFKA": f"127.0.0.1:{port}",
        "RUNSTREAM_API": "http://127.0.0.1:9",
        "PYTHONPATH": str(REPO),
    }
    env.pop("RUNSTREAM_RUN_ID", None)
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], env=env, cwd=tmp_path, capture_output=True,
        text=True, timeout=120, check=False,
    )


@pytest.mark.parametrize("mode", ["default", "info"])
def test_a_closed_port_gives_runstreams_lines_and_none_of_aiokafkas(
    tmp_path: Path, mode: str
) -> None:
    done = run_offline(tmp_path, mode)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "script done\n"
    lines = done.stderr.splitlines()
    # Runstream's two lines, and no line of aiokafka's ("Unable connect to …" alone).
    assert len(lines) == 2, done.stderr
    assert all("runstream" in line for line in lines), done.stderr
    offline = [line for line in lines if "runstream cannot reach Kafka" in line]
    assert len(offline) == 1, done.stderr
    # aiokafka's own words, folded into the one line: what the client saw.
    assert "the Kafka client logged an error, not shown; the last: Unable connect to" in (
        offline[0])
    assert "Connect call failed" in offline[0]
    assert "events are spooled under" in offline[0]
    kept = [line for line in lines if "were not delivered before close" in line]
    assert len(kept) == 1, done.stderr
    assert "aiokafka" not in done.stderr  # basicConfig would show its loggers' names


def test_who_asked_for_aiokafkas_details_gets_them(tmp_path: Path) -> None:
    done = run_offline(tmp_path, "debug")
    assert done.returncode == 0, done.stderr
    assert "ERROR:aiokafka:Unable connect to" in done.stderr
    assert "runstream cannot reach Kafka" in done.stderr


@pytest.fixture
def folded() -> Iterator[list[logging.LogRecord]]:
    """aiokafka's loggers with the fold installed and a handler recording what passes."""
    install()
    seen: list[logging.LogRecord] = []

    class Record(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Record()
    top = logging.getLogger("aiokafka")
    level = top.level
    top.setLevel(logging.INFO)
    top.addHandler(handler)
    held_back()  # start from zero
    try:
        yield seen
    finally:
        top.removeHandler(handler)
        top.setLevel(level)
        held_back()


def on_thread(name: str, logger_name: str, level: int, text: str) -> None:
    t = threading.Thread(target=lambda: logging.getLogger(logger_name).log(level, text),
                         name=name)
    t.start()
    t.join()


def test_only_a_senders_warnings_and_errors_are_held_back(
    folded: list[logging.LogRecord],
) -> None:
    on_thread(SENDER_THREAD, "aiokafka", logging.ERROR, "Unable connect to 1")
    on_thread(SENDER_THREAD, "aiokafka.conn", logging.WARNING, "Unable connect to 2")
    on_thread(SENDER_THREAD, "aiokafka.producer.sender", logging.ERROR, "Unable connect to 3")
    on_thread(SENDER_THREAD, "aiokafka.conn", logging.INFO, "connected")  # below WARNING
    on_thread("consumer", "aiokafka.conn", logging.ERROR, "a worker's consumer")  # not ours
    assert [r.getMessage() for r in folded] == ["connected", "a worker's consumer"]
    assert held_back() == ("; the Kafka client logged 3 errors, not shown; the last: "
                           "Unable connect to 3")
    assert held_back() == ""  # counted from the last call on


def test_the_quoted_line_is_bounded(folded: list[logging.LogRecord]) -> None:
    on_thread(SENDER_THREAD, "aiokafka", logging.ERROR, "x" * 1000)
    message = held_back()
    assert message.startswith("; the Kafka client logged an error, not shown; the last: xxx")
    assert message.endswith("x…")
    assert len(message) < 400
    assert FOLD.take() == (0, None)
