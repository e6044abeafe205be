"""Query parameters, cursors and JSON answers shared by the read routes.

Every parse error is a 400 whose message names the parameter. Cursors are opaque to
clients: URL-safe base64 of a small JSON document ``{"k": kind, "v": [...]}`` naming what
they continue (``runs:created_at:desc``, ``logs``…), so a cursor handed to another listing
or another ordering is refused instead of silently skipping rows.

The OpenAPI fragments for these parameters live here too, next to their parsers.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web

from ingest.db.values import dumps

__all__ = [
    "CURSOR_PARAMETER",
    "DEFAULT_LIMIT",
    "LIMIT_PARAMETER",
    "MAX_LIMIT",
    "UNAVAILABLE",
    "bad_request",
    "bool_param",
    "cursor_param",
    "decode_cursor",
    "encode_cursor",
    "int_param",
    "json_body",
    "json_ok",
    "limit_param",
    "not_found",
    "optional_int_param",
    "path_param",
    "query_parameter",
    "storable",
    "str_param",
    "str_params",
    "time_param",
]

#: Documented on every route that reads the database (see ``reads.DatabaseUnavailableError``).
UNAVAILABLE: Final = {503: "The database is unreachable or not migrated; retry later."}
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
MAX_CURSOR_CHARS: Final = 4096
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


def bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=message)


def not_found(message: str) -> web.HTTPNotFound:
    return web.HTTPNotFound(text=message)


async def json_body(request: web.Request) -> dict[str, Any]:
    """A request's JSON object body; 400 for anything else (bad JSON or UTF-8, absurd
    nesting, not an object)."""
    try:
        body = await request.json()
    except (ValueError, RecursionError):
        raise bad_request("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    return body


def json_ok(document: Any) -> web.Response:
    return web.Response(text=dumps(document), content_type="application/json")


def storable(value: str) -> bool:
    """Whether PostgreSQL can take ``value`` as text (no NUL, valid UTF-8)."""
    if "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True


def str_params(request: web.Request, name: str) -> list[str]:
    """Every value of a repeatable parameter, in order."""
    values: list[str] = request.query.getall(name, [])
    for value in values:
        if not storable(value):
            raise bad_request(f"parameter {name!r} contains NUL or invalid characters")
    return values


def path_param(request: web.Request, name: str, what: str) -> str:
    """A path segment naming something; one that no stored name can have is a 404."""
    value = request.match_info[name]
    if not storable(value):
        raise not_found(f"no {what} {value[:80]!r}")
    return value


def str_param(request: web.Request, name: str) -> str | None:
    """A parameter given at most once (a repeated single-valued parameter is a 400)."""
    values = str_params(request, name)
    if not values:
        return None
    if len(values) > 1:
        raise bad_request(f"parameter {name!r} is given {len(values)} times; give it once")
    if not values[0]:
        raise bad_request(f"parameter {name!r} is empty")
    return values[0]


def bool_param(request: web.Request, name: str) -> bool:
    """``true`` or ``false`` (absent: false)."""
    value = str_param(request, name)
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    raise bad_request(f"parameter {name!r} must be true or false, got {value[:20]!r}")


def optional_int_param(
    request: web.Request, name: str, *, minimum: int = INT64_MIN, maximum: int = INT64_MAX
) -> int | None:
    text = str_param(request, name)
    if text is None:
        return None
    try:
        value = int(text.strip())
    except ValueError:
        raise bad_request(f"parameter {name!r} must be an integer, got {text[:40]!r}") from None
    if not minimum <= value <= maximum:
        raise bad_request(f"parameter {name!r} must be between {minimum} and {maximum}")
    return value


def int_param(
    request: web.Request, name: str, *, default: int, minimum: int = INT64_MIN,
    maximum: int = INT64_MAX,
) -> int:
    value = optional_int_param(request, name, minimum=minimum, maximum=maximum)
    return default if value is None else value


def limit_param(request: web.Request) -> int:
    return int_param(request, "limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)


def time_param(request: web.Request, name: str) -> datetime | None:
    """ISO 8601; without a time zone it is taken as UTC."""
    text = str_param(request, name)
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise bad_request(
            f"parameter {name!r} must be an ISO 8601 time such as 2026-01-31T12:00:00Z, "
            f"got {text[:40]!r}"
        ) from None
    try:
        return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
    except OverflowError:
        raise bad_request(f"parameter {name!r} is out of range") from None


def encode_cursor(kind: str, values: Sequence[Any]) -> str:
    raw = json.dumps({"k": kind, "v": list(values)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str, kind: str, name: str = "cursor") -> list[Any]:
    """The values of a cursor made by ``encode_cursor(kind, …)``; 400 otherwise."""
    problem = f"parameter {name!r} is not a cursor of this listing (take next_cursor as given)"
    if len(text) > MAX_CURSOR_CHARS:
        raise bad_request(problem)
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        document = json.loads(raw)
    except (binascii.Error, ValueError):
        raise bad_request(problem) from None
    if (not isinstance(document, dict) or document.get("k") != kind
            or not isinstance(document.get("v"), list)):
        raise bad_request(problem)
    values: list[Any] = document["v"]
    for value in values:
        if (isinstance(value, str) and not storable(value)) or (
            isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX
        ):
            raise bad_request(problem)
    return values


def cursor_param(request: web.Request, kind: str, name: str = "cursor") -> list[Any] | None:
    text = str_param(request, name)
    return None if text is None else decode_cursor(text, kind, name)


# --- OpenAPI fragments ---------------------------------------------------------------------


def query_parameter(
    name: str, description: str, schema: dict[str, Any], *, repeatable: bool = False,
    required: bool = False,
) -> dict[str, Any]:
    if repeatable:
        items: dict[str, Any] = {"type": "array", "items": schema}
        if required:
            items["minItems"] = 1
        return {"name": name, "in": "query", "required": required, "description": description,
                "schema": items, "style": "form", "explode": True}
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema}


LIMIT_PARAMETER: Final = query_parameter(
    "limit", f"Items per page (default {DEFAULT_LIMIT}).",
    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
)
CURSOR_PARAMETER: Final = query_parameter(
    "cursor", "Where to continue: the next_cursor of the previous page, as given.",
    {"type": "string", "minLength": 1},
)
