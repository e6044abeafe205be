"""``EnvReader``: one meaning per ``RUNSTREAM_*`` variable, in the SDK and the server alike.

Blank means unset (the default); a value that does not parse is a ``ConfigError`` naming
the variable and the value (never a secret's value, never a bare ``ValueError``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ingest.settings import Settings, parse_workspace_tokens
from producer import ConfigError, EnvReader, KafkaSecurity, Run, Secret, Workspace

BLANKS = ("", "   ", "\t\n")


@pytest.mark.parametrize("blank", BLANKS)
def test_a_blank_variable_takes_the_default(blank: str) -> None:
    read = EnvReader({"X": blank})
    assert read.text("X", "fallback") == "fallback"
    assert read.integer("X", 7) == 7
    assert read.flag("X", True) is True
    assert read.flag("X", False) is False
    assert read.json("X", {"a": 1}) == {"a": 1}
    assert read.path("X") is None
    assert read.secret("X") == Secret("")
    assert EnvReader({}).text("X", "fallback") == "fallback"


def test_values_are_typed_and_text_is_stripped(tmp_path: Path) -> None:
    read = EnvReader(
        {
            "T": "  k:9093 ",
            "I": " 12 ",
            "B": " Yes",
            "J": ' {"a": [1, 2]} ',
            "P": f" {tmp_path} ",
            "S": " pass word ",
        }
    )
    assert read.text("T") == "k:9093"
    assert read.integer("I", 0) == 12
    assert read.flag("B", False) is True
    assert read.json("J") == {"a": [1, 2]}
    assert read.path("P") == tmp_path
    assert read.secret("S").value == " pass word "  # a password is kept exactly
    assert EnvReader({"P": "~/x"}).path("P") == Path.home() / "x"


@pytest.mark.parametrize(
    ("env", "call", "shown"),
    [
        ({"RUNSTREAM_PARTITIONS": "six"}, lambda r: r.integer("RUNSTREAM_PARTITIONS", 6), "'six'"),
        ({"RUNSTREAM_RANK": "1.5"}, lambda r: r.integer("RUNSTREAM_RANK", 0), "'1.5'"),
        ({"FLAG": "maybe"}, lambda r: r.flag("FLAG", True), "'maybe'"),
        ({"DOC": "{'a': 1}"}, lambda r: r.json("DOC"), "line 1, column 2"),
    ],
)
def test_a_bad_value_is_a_config_error_naming_the_variable_and_the_value(
    env: dict[str, str], call: Callable[[EnvReader], object], shown: str
) -> None:
    (name,) = env
    with pytest.raises(ConfigError) as info:
        call(EnvReader(env))
    assert type(info.value) is ConfigError
    assert info.value.name == name
    assert str(info.value).startswith(f"{name}: ")
    assert shown in str(info.value)
    assert env[name].strip() in str(info.value)


def test_a_secret_json_value_is_never_quoted() -> None:
    with pytest.raises(ConfigError, match=r"RUNSTREAM_WORKSPACE_TOKENS: not valid JSON") as info:
        EnvReader({"RUNSTREAM_WORKSPACE_TOKENS": '{"a": "s3cr3t"'}).json(
            "RUNSTREAM_WORKSPACE_TOKENS", secret=True
        )
    assert "s3cr3t" not in str(info.value)
    with pytest.raises(ConfigError, match="must be a JSON object") as shape:
        parse_workspace_tokens('["s3cr3t"]')
    assert "s3cr3t" not in str(shape.value)


def test_the_reader_never_shows_values_in_its_repr() -> None:
    assert "s3cr3t" not in repr(EnvReader({"RUNSTREAM_TOKEN": "s3cr3t"}))


@pytest.mark.parametrize("blank", BLANKS)
def test_sdk_and_server_agree_that_blank_shared_variables_mean_the_defaults(blank: str) -> None:
    env = {
        name: blank
        for name in ("RUNSTREAM_KAFKA", "RUNSTREAM_API", "RUNSTREAM_HOME", "RUNSTREAM_TOPIC")
    }
    settings = Settings.from_env(env)
    workspace = Workspace.from_env(env)
    defaults = Settings()
    assert settings.kafka_bootstrap == workspace.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.api_url == workspace.api_url == defaults.api_url
    assert settings.topic == workspace.topic == defaults.topic
    assert settings.home == workspace.home == defaults.home


def test_sdk_and_server_read_the_shared_variables_the_same_way(tmp_path: Path) -> None:
    env = {
        "RUNSTREAM_KAFKA": " broker:9093 ",
        "RUNSTREAM_API": "https://api.example:8470/ ",
        "RUNSTREAM_HOME": str(tmp_path),
        "RUNSTREAM_TOPIC": "events ",
        "RUNSTREAM_TOKEN": "tok-s3cret",
    }
    settings = Settings.from_env(env)
    workspace = Workspace.from_env(env)
    assert (settings.kafka_bootstrap, settings.api_url, settings.topic, settings.home) == (
        workspace.kafka_bootstrap,
        workspace.api_url,
        workspace.topic,
        workspace.home,
    )
    assert (workspace.kafka_bootstrap, workspace.api_url) == (
        "broker:9093",
        "https://api.example:8470",
    )
    assert settings.token == Secret("tok-s3cret")


@pytest.mark.parametrize(
    "name", ["RUNSTREAM_PARTITIONS", "RUNSTREAM_PG_PORT", "RUNSTREAM_METRICS_PORT"]
)
def test_the_servers_integers_fail_naming_the_variable(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: "lots"})
    assert str(info.value) == f"{name}: must be an integer, not 'lots'"


def test_server_settings_keep_their_defaults_and_treat_a_blank_dsn_as_unset() -> None:
    settings = Settings.from_env({"RUNSTREAM_DB": " ", "RUNSTREAM_WORKSPACE_TOKENS": ""})
    assert settings == Settings()
    assert settings.db_dsn is None
    assert settings.workspace_tokens == {}


def test_get_context_names_a_bad_rank(tmp_path: Path) -> None:
    workspace = Workspace(home=tmp_path)
    with pytest.raises(ConfigError, match=r"^RUNSTREAM_RANK: must be an integer, not 'first'$"):
        Run.get_context(workspace=workspace, env={"RUNSTREAM_RANK": "first"})
    with pytest.raises(ConfigError, match=r"^RUNSTREAM_WORLD_SIZE: must be an integer, not '2x'"):
        Run.get_context(workspace=workspace, env={"RUNSTREAM_WORLD_SIZE": "2x"})


def test_kafka_security_reads_through_the_same_rules() -> None:
    assert (
        KafkaSecurity.from_env(
            {"RUNSTREAM_KAFKA_SECURITY_PROTOCOL": " ", "RUNSTREAM_KAFKA_SSL_CHECK_HOSTNAME": ""}
        )
        == KafkaSecurity()
    )
    with pytest.raises(ConfigError, match=r"RUNSTREAM_KAFKA_SSL_CHECK_HOSTNAME: .*not 'sometimes'"):
        KafkaSecurity.from_env({"RUNSTREAM_KAFKA_SSL_CHECK_HOSTNAME": "sometimes"})
    assert set(KafkaSecurity.ENV_VARS) >= {
        "RUNSTREAM_KAFKA_SECURITY_PROTOCOL",
        "RUNSTREAM_KAFKA_PASSWORD",
    }
