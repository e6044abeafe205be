"""Pure helpers of the API and blob store: digests, layout, auth parsing, labels."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.api.app import listen_address
from ingest.api.auth import ADMIN, TokenTable, bearer_token
from ingest.api.blobstore import InvalidDigestError, is_valid_digest, shard_path
from ingest.api.http import error_body, method_label
from ingest.settings import Secret

DIGEST = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"


@pytest.mark.parametrize(
    ("digest", "valid"),
    [
        (DIGEST, True),
        ("0" * 64, True),
        (DIGEST.upper(), False),
        (DIGEST[:-1], False),
        (DIGEST + "0", False),
        ("g" + DIGEST[1:], False),
        (DIGEST[:-1] + "\n", False),
        ("", False),
        ("../" + DIGEST[3:], False),
    ],
)
def test_digest_must_be_64_lowercase_hex(digest: str, valid: bool) -> None:
    assert is_valid_digest(digest) is valid


def test_shard_path_nests_two_levels_by_digest_prefix() -> None:
    assert shard_path(Path("/b"), DIGEST) == Path("/b/2c/f2") / DIGEST


def test_shard_path_rejects_what_could_escape_the_root() -> None:
    with pytest.raises(InvalidDigestError, match="64 lowercase hex"):
        shard_path(Path("/b"), "../../etc/passwd")


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER   abc  ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token_parsing(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_token_comparison_is_exact_and_accepts_non_ascii() -> None:
    table = TokenTable(admin=Secret("s3cret"), workspaces={"w": (Secret("sécret"),)})
    assert table.grant("s3cret") is ADMIN
    assert table.grant("s3cre") is None
    assert table.grant("s3cret ") is None
    assert table.grant("sécret") is not ADMIN
    assert table.grant("secret") is None


def test_unknown_methods_share_one_metric_label() -> None:
    assert method_label("PUT") == "PUT"
    assert method_label("PROPFIND") == "other"


def test_error_body_shape() -> None:
    assert error_body(413, "too big") == {"error": {"status": 413, "message": "too big"}}


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://127.0.0.1:8470", ("127.0.0.1", 8470)),
        ("http://0.0.0.0:9000/", ("0.0.0.0", 9000)),  # noqa: S104 - parsing, not binding
        ("http://[::1]:8471", ("::1", 8471)),
        ("http://api.internal", ("api.internal", 8470)),
        ("localhost:8500", ("localhost", 8500)),
    ],
)
def test_listen_address_follows_runstream_api(url: str, address: tuple[str, int]) -> None:
    assert listen_address(url) == address
