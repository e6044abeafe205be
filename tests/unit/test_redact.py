"""The log redaction the CLI installs (ingest/cli/redact.py), without any service; that
no service logs or answers a secret is tests/integration/test_secrets_hygiene.py."""

from __future__ import annotations

import json
import logging
import sys

from ingest.cli.redact import RedactingFormatter, redact, secrets_of
from ingest.settings import Settings

#: As written in the DSN (percent-encoded) and as the driver decodes it.
PG_PASSWORD = "pg-S3cret%2Fwith%25chars"  # noqa: S105 - test credentials
PG_PASSWORD_DECODED = "pg-S3cret/with%chars"  # noqa: S105
ADMIN_TOKEN = "adm-T0ken-9f8e7d"  # noqa: S105
VISION_TOKEN = "vis-T0ken-1a2b3c"  # noqa: S105


def test_the_redacting_formatter_masks_messages_arguments_and_tracebacks() -> None:
    formatter = RedactingFormatter("%(message)s", secrets=[ADMIN_TOKEN, "abc", ""])
    try:
        raise ValueError(f"bad token {ADMIN_TOKEN}")
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "dsn %s", (ADMIN_TOKEN,),
                                   sys.exc_info())  # fmt: skip
    text = formatter.format(record)
    assert ADMIN_TOKEN not in text
    assert text.count("***") == 2
    assert "abc" in redact("abc", ["abc"])  # too short to search for
    settings = Settings.from_env({
        "RUNSTREAM_DB": f"postgresql://u:{PG_PASSWORD}@h/db",
        "RUNSTREAM_TOKEN": ADMIN_TOKEN,
        "RUNSTREAM_WORKSPACE_TOKENS": json.dumps({"a": [VISION_TOKEN]}),
    })
    assert set(secrets_of(settings)) >= {PG_PASSWORD, PG_PASSWORD_DECODED, ADMIN_TOKEN,
                                         VISION_TOKEN}  # fmt: skip
