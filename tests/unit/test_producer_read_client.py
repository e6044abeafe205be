"""The SDK's HTTP client without a network: URL building and quoting, JSON and
non-finite decoding, error mapping, pagination, uploads, run-list query parameters, SSE
parsing.

``FakeApi`` stands in for ``urllib.request.urlopen`` (the client's injected seam) and
answers from canned routes; integration tests (tests/integration/test_producer_read*.py)
go through the real API server.
"""

from __future__ import annotations

import io
import json
import math
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from producer import ApiError, BlobUploadError, NotFoundError, TransportError
from producer._blobs import upload
from producer._client import ApiClient, decode_non_finite, file_path, segment
from producer._follow import SseEvent, format_line, parse_sse
from producer._reads import runs_query
from tests.unit.producer_fakes import (
    API,
    Answer,
    FakeApi,
    ok,
)


def client(api: FakeApi | Callable[..., Any], token: str = "") -> ApiClient:
    return ApiClient(api_url=API + "/", token=token, timeout_s=7.0, urlopen=api)


# ---- URLs -------------------------------------------------------------------------


def test_path_segments_quote_everything_that_could_change_the_route() -> None:
    assert segment("exp_1700000000_0a1b2c3d") == "exp_1700000000_0a1b2c3d"
    assert segment("a/b c?d#e%f") == "a%2Fb%20c%3Fd%23e%25f"
    assert segment("ünï") == "%C3%BCn%C3%AF"
    assert file_path("outputs/model v2.pkl") == "outputs/model%20v2.pkl"
    assert file_path("outputs/a#b?.txt") == "outputs/a%23b%3F.txt"


def test_query_parameters_are_quoted_and_repeatable() -> None:
    seen: list[list[tuple[str, str]]] = []

    def metrics(params: list[tuple[str, str]]) -> Answer:
        seen.append(params)
        return 200, {"metrics": {}}

    api = FakeApi({"/v1/runs/r%2F1/metrics": metrics})
    client(api).get_json(
        "/v1/runs/" + segment("r/1") + "/metrics", [("name", "loss & acc"), ("name", "a=b")]
    )
    assert seen == [[("name", "loss & acc"), ("name", "a=b")]]
    assert api.requests[0].full_url == (
        f"{API}/v1/runs/r%2F1/metrics?name=loss%20%26%20acc&name=a%3Db"
    )


def test_the_token_is_sent_as_bearer_and_never_shown() -> None:
    api = FakeApi({"/v1/compute": ok({"targets": []})})
    c = client(api, token="s3cret")  # noqa: S106 - a test credential
    c.get_json("/v1/compute")
    assert api.requests[0].get_header("Authorization") == "Bearer s3cret"
    assert api.requests[0].get_header("Accept") == "application/json"
    assert api.timeouts == [7.0]
    assert "s3cret" not in repr(c)
    without = FakeApi({"/v1/compute": ok({"targets": []})})
    client(without).get_json("/v1/compute")
    assert without.requests[0].get_header("Authorization") is None


# ---- decoding ---------------------------------------------------------------------


def test_non_finite_strings_become_floats_in_value_positions_only() -> None:
    doc = json.loads(
        json.dumps(
            {
                "metrics": {
                    "scalar": "NaN",
                    "series": [1.5, "Infinity", "-Infinity", 2, True, "text"],
                    "table": {"x": [1, 2], "NaN": ["NaN", "ok"]},
                    "int": 3,
                }
            }
        )
    )
    got = decode_non_finite(doc)["metrics"]
    assert math.isnan(got["scalar"])
    assert got["series"][1:] == [math.inf, -math.inf, 2, True, "text"]
    assert type(got["series"][3]) is int
    assert type(got["series"][4]) is bool
    assert list(got["table"]) == ["x", "NaN"]  # keys untouched
    assert math.isnan(got["table"]["NaN"][0])
    assert got["table"]["NaN"][1] == "ok"
    assert got["int"] == 3


def test_an_escaped_string_spelled_like_a_non_finite_float_stays_a_string() -> None:
    from ingest.db.values import KIND_STR, typed_value

    # What the API writes for the string "NaN" (and not for the float), read back.
    wire = json.loads(json.dumps([typed_value(0.0, KIND_STR, t)
                                  for t in ("NaN", "Infinity", "-Infinity", "nan", "")]))
    assert wire[0] == {"str": "NaN"}
    assert wire[3:] == ["nan", ""]
    assert decode_non_finite(wire) == ["NaN", "Infinity", "-Infinity", "nan", ""]
    assert decode_non_finite({"str": "-Infinity"}) == "-Infinity"
    # A table column named "str" is a list, never an escape.
    assert decode_non_finite({"str": ["NaN", {"str": "NaN"}]})["str"][1] == "NaN"
    assert math.isnan(decode_non_finite({"str": ["NaN"]})["str"][0])


def test_nested_lists_are_decoded_too() -> None:
    assert decode_non_finite([["Infinity"], {"v": ["-Infinity"]}]) == [
        [math.inf],
        {"v": [-math.inf]},
    ]


# ---- errors -----------------------------------------------------------------------


def test_error_statuses_carry_the_servers_message() -> None:
    api = FakeApi(
        {
            "/v1/runs": lambda p: (400, {"error": {"status": 400, "message": "bad order_by: x"}}),
            "/v1/runs/x": lambda p: (404, {"error": {"status": 404, "message": "no run 'x'"}}),
            "/v1/compute": lambda p: (503, b"<html>gateway</html>", "text/html"),
            "/v1/experiments": lambda p: (401, b"", "text/plain"),
        }
    )
    c = client(api)
    with pytest.raises(ApiError) as bad:
        c.get_json("/v1/runs", [("order_by", "x")])
    assert (bad.value.status, bad.value.message, bad.value.retriable) == (
        400,
        "bad order_by: x",
        False,
    )
    assert str(bad.value) == "GET /v1/runs: HTTP 400: bad order_by: x"
    assert not isinstance(bad.value, NotFoundError)

    with pytest.raises(NotFoundError) as missing:
        c.get_json("/v1/runs/x")
    assert (missing.value.status, missing.value.message) == (404, "no run 'x'")

    with pytest.raises(ApiError) as down:
        c.get_json("/v1/compute")
    assert (down.value.status, down.value.message, down.value.retriable) == (
        503,
        "<html>gateway</html>",
        True,
    )
    with pytest.raises(ApiError) as unauthorized:
        c.get_json("/v1/experiments")
    assert (unauthorized.value.status, unauthorized.value.message) == (401, "Reason")


def test_no_response_is_a_retriable_api_error_naming_the_server() -> None:
    def refused(request: urllib.request.Request, timeout: float) -> Any:
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    with pytest.raises(ApiError) as raised:
        client(refused).get_json("/v1/runs/x")
    err = raised.value
    assert isinstance(err, TransportError)
    assert (err.status, err.retriable) == (None, True)
    assert API in err.message
    assert "Connection refused" in err.message

    def timed_out(request: urllib.request.Request, timeout: float) -> Any:
        raise TimeoutError("timed out")

    with pytest.raises(ApiError, match=r"API unreachable.*timed out"):
        client(timed_out).get_json("/v1/runs/x")


def test_answers_that_are_not_json_objects_are_errors() -> None:
    api = FakeApi(
        {
            "/a": lambda p: (200, b"not json", "text/plain"),
            "/b": lambda p: (200, [1, 2]),
        }
    )
    with pytest.raises(ApiError, match="not JSON") as raised:
        client(api).get_json("/a")
    assert raised.value.status == 200
    with pytest.raises(ApiError, match="JSON list, not an object"):
        client(api).get_json("/b")


# ---- pagination and downloads ------------------------------------------------------


def test_pages_follow_next_cursor_until_null() -> None:
    pages = {
        None: {"runs": [{"run_id": "a"}, {"run_id": "b"}], "next_cursor": "c1"},
        "c1": {"runs": [{"run_id": "c"}], "next_cursor": "c2"},
        "c2": {"runs": [], "next_cursor": None},
    }

    def runs(params: list[tuple[str, str]]) -> Answer:
        cursor = dict(params).get("cursor")
        assert ("experiment", "e") in params
        return 200, pages[cursor]

    api = FakeApi({"/v1/runs": runs})
    got = [r["run_id"] for r in client(api).pages("/v1/runs", [("experiment", "e")], "runs")]
    assert got == ["a", "b", "c"]
    assert len(api.requests) == 3


def test_pages_without_the_key_are_errors() -> None:
    api = FakeApi({"/v1/runs": ok({"items": []})})
    with pytest.raises(ApiError, match="no 'runs' list"):
        list(client(api).pages("/v1/runs", [], "runs"))


def test_download_streams_the_body() -> None:
    payload = bytes(range(256)) * 9000
    api = FakeApi({"/v1/runs/r/files/outputs/m.bin": lambda p: (200, payload, "x/y")})
    out = io.BytesIO()
    assert client(api).download("/v1/runs/r/files/outputs/m.bin", out) == len(payload)
    assert out.getvalue() == payload


# ---- uploads ----------------------------------------------------------------------


def test_uploads_carry_the_token_and_the_workspace_like_every_request(tmp_path: Path) -> None:
    sha = "a" * 64
    staged = tmp_path / sha
    staged.write_bytes(b"bytes")
    api = FakeApi({f"/v1/blobs/{sha}": ok({"sha256": sha}), "/v1/compute": ok({"targets": []})})
    c = ApiClient(api_url=API, token="s3cret", timeout_s=7.0, workspace="vision", urlopen=api)  # noqa: S106

    assert upload(c, sha, staged, timeout_s=60.0) == 200
    c.get_json("/v1/compute")
    put, get = api.requests
    assert (put.get_method(), put.full_url) == ("PUT", f"{API}/v1/blobs/{sha}")
    assert put.get_header("Content-length") == "5"
    for request in (put, get):
        assert request.get_header("Authorization") == "Bearer s3cret"
        assert request.get_header("X-runstream-workspace") == "vision"
    assert api.timeouts == [60.0, 7.0]


def test_upload_failures_are_blob_upload_errors_that_say_whether_to_retry(
    tmp_path: Path,
) -> None:
    sha = "b" * 64
    staged = tmp_path / sha
    staged.write_bytes(b"bytes")
    mismatch = {"error": {"status": 400, "message": "digest mismatch"}}
    refusing = FakeApi({f"/v1/blobs/{sha}": lambda p: (400, mismatch)})
    with pytest.raises(BlobUploadError) as refused:
        upload(client(refusing), sha, staged, timeout_s=1.0)
    assert (refused.value.status, refused.value.retriable) == (400, False)
    assert str(refused.value) == f"blob {sha[:12]}: HTTP 400: digest mismatch"

    def down(request: urllib.request.Request, timeout: float) -> Any:
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    with pytest.raises(BlobUploadError, match="API unreachable") as unreachable:
        upload(client(down), sha, staged, timeout_s=1.0)
    assert (unreachable.value.status, unreachable.value.retriable) == (None, True)

    with pytest.raises(FileNotFoundError):  # uploaded and deleted meanwhile
        upload(client(refusing), sha, tmp_path / "gone", timeout_s=1.0)


# ---- GET /v1/runs parameters ----------------------------------------------------------


def query(**over: Any) -> list[tuple[str, str]]:
    args: dict[str, Any] = {
        "experiment": "exp",
        "status": None,
        "tags": None,
        "order_by": None,
        "order": None,
        "compute_target": None,
        "parent_run_id": None,
        "created_after": None,
        "created_before": None,
        "page_size": 100,
    }
    args.update(over)
    return runs_query(**args)


def test_run_filters_become_the_documented_parameters() -> None:
    after = datetime(2026, 11, 28, 4, 0, tzinfo=UTC)
    before = datetime(2026, 11, 28, 6, 0, tzinfo=timezone(timedelta(hours=2)))
    assert query(
        status=["Running", "Queued"],
        tags={"selected": "yes", "baseline": None},
        order_by="metric:loss",
        order="asc",
        compute_target="gpu",
        parent_run_id="exp_1_0a1b2c3d",
        created_after=after,
        created_before=before,
        page_size=1000,
    ) == [
        ("experiment", "exp"),
        ("status", "Running"),
        ("status", "Queued"),
        ("tag", "selected:yes"),
        ("tag", "baseline"),
        ("order_by", "metric:loss"),
        ("order", "asc"),
        ("compute_target", "gpu"),
        ("parent_run_id", "exp_1_0a1b2c3d"),
        ("created_after", "2026-11-28T04:00:00+00:00"),
        ("created_before", "2026-11-28T06:00:00+02:00"),
        ("limit", "1000"),
    ]
    assert query(status="Completed", tags="k:v") == [
        ("experiment", "exp"),
        ("status", "Completed"),
        ("tag", "k:v"),
        ("limit", "100"),
    ]
    assert query(tags=["a", "b:c"])[1:3] == [("tag", "a"), ("tag", "b:c")]


@pytest.mark.parametrize(
    ("over", "error", "match"),
    [
        ({"order_by": "loss"}, ValueError, "order_by"),
        ({"order_by": "metric:"}, ValueError, "order_by"),
        ({"order": "up"}, ValueError, "order"),
        ({"created_after": datetime(2026, 1, 1)}, ValueError, "timezone-aware"),
        ({"created_before": 1700000000}, TypeError, "created_before"),
        ({"page_size": 0}, ValueError, "page_size"),
        ({"page_size": 1001}, ValueError, "page_size"),
        ({"status": [""]}, ValueError, "status"),
        ({"tags": {"": "x"}}, ValueError, "tag key"),
    ],
)
def test_bad_run_filters_raise_at_the_call(
    over: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        query(**over)


# ---- Server-Sent Events --------------------------------------------------------------


def test_sse_parsing_follows_the_event_stream_rules() -> None:
    body = (
        b": keep-alive\n\n"
        b'event: status\r\ndata: {"status": "Running"}\r\nid: 7\r\n\r\n'
        b"data: line one\ndata:line two\n\n"
        b"event: log\ndata: {}\nretry: 100\n\n"
        b"event: ignored-without-data\n\n"
        b'event: point\ndata: {"x": 1}'  # no blank line: not dispatched
    )
    events = list(parse_sse(io.BytesIO(body)))
    assert events == [
        SseEvent("status", '{"status": "Running"}', "7"),
        SseEvent("message", "line one\nline two", "7"),
        SseEvent("log", "{}", "7"),
    ]


def test_log_lines_show_rank_and_stream_when_not_the_usual() -> None:
    assert format_line({"stream": "stdout", "line": "epoch 1", "rank": 0}) == "epoch 1\n"
    assert format_line({"stream": "stderr", "line": "warn", "rank": 0}) == "[stderr] warn\n"
    assert format_line({"stream": "stdout", "line": "hi", "rank": 3}) == "[rank 3] hi\n"
