"""The token table of the API's auth (ingest/api/auth.py) and its configuration, without
a server; what the tokens grant through the real server is in
tests/integration/test_api_auth_scopes.py."""

from __future__ import annotations

import hmac

import pytest

from ingest.api.auth import ADMIN, Grant, TokenTable
from ingest.settings import Secret, Settings, parse_workspace_tokens

ADMIN_TOKEN = "admin-token-0123456789"  # noqa: S105 - test credentials


def test_token_table_grants() -> None:
    table = TokenTable(
        admin=Secret(ADMIN_TOKEN),
        workspaces={"a": (Secret("ta"), Secret("shared")), "b": (Secret("shared"),),
                    "c": (Secret(""),)},
    )
    assert table.grant(ADMIN_TOKEN) is ADMIN
    assert table.grant("ta") == Grant(frozenset({"a"}))
    assert table.grant("shared") == Grant(frozenset({"a", "b"}))
    assert table.grant("") is None  # an empty configured token grants nothing
    assert table.grant("ta ") is None
    assert table.grant("t") is None
    assert "ta" not in repr(table)
    assert ADMIN_TOKEN not in repr(table)
    assert not TokenTable().enabled
    assert TokenTable(admin=Secret("")).grant("") is None


def test_every_token_is_compared_without_early_exit() -> None:
    calls: list[tuple[bytes, bytes]] = []

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return hmac.compare_digest(a, b)

    table = TokenTable(admin=Secret(ADMIN_TOKEN),
                       workspaces={w: (Secret(f"tok-{w}"),) for w in "abcdefgh"},
                       compare=counting)
    for presented in (ADMIN_TOKEN, "tok-d", "wrong", "x" * 10_000):
        calls.clear()
        table.grant(presented)
        # Nine configured tokens: nine comparisons whatever matched, all of 32-byte
        # digests (no length leak).
        assert len(calls) == 9, presented
        assert {(len(a), len(b)) for a, b in calls} == {(32, 32)}


def test_workspace_tokens_from_the_environment() -> None:
    settings = Settings.from_env({
        "RUNSTREAM_TOKEN": ADMIN_TOKEN,
        "RUNSTREAM_WORKSPACE_TOKENS": '{"vision": "tv", "nlp": ["tn", "tn-next"]}',
    })
    assert {w: [t.value for t in ts] for w, ts in settings.workspace_tokens.items()} == {
        "vision": ["tv"], "nlp": ["tn", "tn-next"],
    }
    shown = repr(settings)
    for secret in (ADMIN_TOKEN, "tv", "tn-next"):
        assert f"'{secret}'" not in shown
    for bad, expected in (
        ('{"vision": "tv"', "not valid JSON (line 1, column 16)"),
        ('["tv"]', "must be a JSON object"),
        ('{"vision": ""}', "RUNSTREAM_WORKSPACE_TOKENS['vision'] must be a non-empty token"),
        ('{"vision": ["s3cr3t-token", 5]}', "RUNSTREAM_WORKSPACE_TOKENS['vision'] must be"),
    ):
        with pytest.raises(ValueError, match="RUNSTREAM_WORKSPACE_TOKENS") as info:
            parse_workspace_tokens(bad)
        assert expected in str(info.value)
        assert "s3cr3t" not in str(info.value)
