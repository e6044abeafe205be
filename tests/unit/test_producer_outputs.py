"""``./outputs`` capture (issue 15, item 9): a run uploads every file of its outputs
folder when it completes — ``./outputs`` of the current directory by default, leftovers
included — unless ``outputs_dir=None`` or ``RUNSTREAM_CAPTURE_OUTPUTS=0``."""

from __future__ import annotations

from pathlib import Path

import pytest

from producer import ConfigError, Experiment
from tests.unit.producer_fakes import MemoryKafka, MemoryWorkspace, of_kind, wait_until


def artifact_names(kafka: MemoryKafka) -> list[str]:
    wait_until(lambda: any(s["status"] == "Completed"
                           for s in of_kind(kafka.events(), "Lifecycle")))
    return sorted(a["name"] for a in of_kind(kafka.events(), "Artifact"))


@pytest.fixture
def leftovers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A current directory whose ./outputs holds what an earlier script left."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs" / "old").mkdir(parents=True)
    (tmp_path / "outputs" / "old" / "checkpoint.pt").write_bytes(b"an earlier run's")
    (tmp_path / "notes.txt").write_text("mine")
    return tmp_path


def test_outputs_of_the_current_directory_are_uploaded_by_default(
    ws: MemoryWorkspace, kafka: MemoryKafka, leftovers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNSTREAM_CAPTURE_OUTPUTS", raising=False)
    with Experiment(ws, "exp").start_logging():
        pass
    assert artifact_names(kafka) == ["outputs/old/checkpoint.pt"]


@pytest.mark.parametrize("off", ["0", "false", "no", "OFF"])
def test_runstream_capture_outputs_0_turns_the_capture_off(
    ws: MemoryWorkspace, kafka: MemoryKafka, leftovers: Path, monkeypatch: pytest.MonkeyPatch,
    off: str,
) -> None:
    monkeypatch.setenv("RUNSTREAM_CAPTURE_OUTPUTS", off)
    with Experiment(ws, "exp").start_logging() as run:
        run.upload_file("notes.txt", leftovers / "notes.txt")  # what is uploaded on purpose
    assert artifact_names(kafka) == ["notes.txt"]


def test_outputs_dir_none_turns_it_off_for_one_run(
    ws: MemoryWorkspace, kafka: MemoryKafka, leftovers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNSTREAM_CAPTURE_OUTPUTS", "1")
    with Experiment(ws, "exp").start_logging(outputs_dir=None):
        pass
    assert artifact_names(kafka) == []


def test_a_malformed_setting_fails_when_the_run_opens(
    ws: MemoryWorkspace, leftovers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNSTREAM_CAPTURE_OUTPUTS", "sometimes")
    with pytest.raises(ConfigError, match="RUNSTREAM_CAPTURE_OUTPUTS"):
        Experiment(ws, "exp").start_logging()
