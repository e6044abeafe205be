"""The console script resolves and its help names every subcommand."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

from ingest.cli import main as cli
from ingest.settings import Secret, Settings, redact_dsn


def test_every_console_script_resolves() -> None:
    scripts = [
        ep
        for ep in entry_points(group="console_scripts")
        if ep.dist and ep.dist.name == "runstream"
    ]
    assert {ep.name for ep in scripts} == {"runstream"}
    for ep in scripts:
        assert ep.load() is cli.main


def test_help_lists_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("up", "down", "status"):
        assert command in out
    assert "RUNSTREAM_KAFKA" in out


def test_settings_from_env_and_secrets_stay_out_of_repr() -> None:
    settings = Settings.from_env(
        {
            "RUNSTREAM_DB": "postgresql://u:hunter2@db/x",
            "RUNSTREAM_TOKEN": "tok-s3cret",
            "RUNSTREAM_TOPIC": "t",
        }
    )
    assert settings.dlq_topic == "t.dlq"
    assert settings.db_dsn == Secret("postgresql://u:hunter2@db/x")
    assert "hunter2" not in repr(settings)
    assert "tok-s3cret" not in repr(settings)
    assert redact_dsn("postgresql://u:hunter2@db/x") == "postgresql://u:***@db/x"
