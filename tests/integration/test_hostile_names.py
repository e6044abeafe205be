"""Hostile names and text are data, end to end: SQL-, JSON-, HTML- and URL-looking strings,
quoting and escape characters, and awkward Unicode go from the real SDK through the broker,
a ``runstream ingest`` worker process and PostgreSQL, and come back exactly equal through
the SDK's read side, raw HTTP and the ``runstream.*`` views; afterwards every table is
still there. A last test stores the longest names the worker accepts (by the decode
limits) straight through the store and reads them back through the API, proving those
limits keep every index entry storable.

Each test has its own topic, database, consumer group and API server (see
the ``read_pipeline`` fixture, which test_producer_read.py uses too).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import urllib.request
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from prometheus_client import CollectorRegistry

from ingest.api.blobstore import BlobStore
from ingest.bench.events import EventFactory, packed_series
from ingest.bench.read import store_events
from ingest.worker.decode import MAX_ID_CHARS, MAX_NAME_BYTES, MAX_PRODUCER_ID_CHARS
from producer import Experiment, Run
from tests.integration.helpers import NewDb, fetch
from tests.integration.pipelines import READ_TOKEN, ReadPipeline, call, mismatch, start_api
from tests.reliability import SECURITY, Reliability, storage_backend

pytestmark = pytest.mark.integration

#: Legal names (1..255 characters, no control characters) that must stay plain data.
HOSTILE = [
    "'; DROP TABLE runstream_data.runs; --",
    '" OR 1=1 --',
    "') OR ('1'='1",
    "$1",
    "$1::text; SELECT pg_sleep(5)",
    "%s",
    "%(name)s",
    "%",
    "_",
    "\\",
    "\\\\'",
    "\\x00",
    "`whoami`",
    "$$ dollar quoted $$",
    "E'\\n'",
    "NULL",
    "null",
    "None",
    "true",
    "-0",
    "1e309",
    "NaN",
    "{{7*7}}",
    "${jndi:ldap://x}",
    '{"json": [1, {"a": null}], "b": "c"}',
    "[1, 2",
    "<script>alert('x')</script>",
    "<!-- --> &amp; &lt;",
    "a/b",
    "a/../b",
    "a?b=c&d=e",
    "a#frag",
    "a%2Fb",
    "%00",
    "..",
    ".",
    " leading and trailing ",
    "emoji 😀🚀",
    "\u202eRTL override",
    "שלום עולם",
    "مرحبا",
    "e\u0301\u0302\u0303 combining",
    "👩\u200d👩\u200d👧 zero-width joiner",
    "zero\u200bwidth",
    "\ufeffBOM",
    "\U0001d54f\U0001d560 astral",
    "a" * 255,
    "😀" * 255,
]
#: The read API writes non-finite floats as these strings (JSON has no NaN).
NON_FINITE_SPELLINGS = ["NaN", "Infinity", "-Infinity"]
#: Free text (tag and property values, string points) may hold what names may not,
#: the non-finite spellings included (see also the test at the end).
HOSTILE_TEXT = [
    *HOSTILE,
    "multi\nline\ttabs\r\n",
    "",
    "\x7f\x01 low controls",
]
#: Artifact names: relative POSIX paths, hostile but legal.
HOSTILE_FILES = [
    "'; DROP TABLE runstream_data.artifacts; --.txt",
    '" OR 1=1 --/x',
    "$1/%s/%(name)s/%",
    "a b/c#d?e=f&g.txt",
    "%2e%2e/literally percent-two-e",
    "..a/b../...",
    "`tick`/u005c is not a backslash",
    "😀/\u202eRTL/e\u0301.bin",
    "<script>alert(1)</script>.html",
    '{"json": 1}',
    "f" * 255,
]
#: Experiment names are [A-Za-z0-9_.-]: the oddest legal ones, and some refused.
EXPERIMENTS = ["a.b-c_d", "0...---___", "9", "A-" + "z" * 233]
REFUSED_EXPERIMENTS = ["'; DROP TABLE x; --", "a b", "../up", "_lead", "ü", "a/b", ""]
#: The series that gets every hostile text as a string point.
TEXT_SERIES = HOSTILE[1]


async def data_tables(dsn: str) -> list[str]:
    rows = await fetch(
        dsn,
        "SELECT schemaname || '.' || tablename AS t FROM pg_tables "
        "WHERE schemaname LIKE 'runstream%' ORDER BY 1",
    )
    return [r["t"] for r in rows]


def http_json(read_pipeline: ReadPipeline, path: str) -> Any:
    return get_json(read_pipeline.api_url + path)


def same_text(got: list[str], want: list[str]) -> None:
    """Equal, and equal code point by code point (no normalisation, no trimming)."""
    assert got == want
    assert [[ord(c) for c in s] for s in got] == [[ord(c) for c in s] for s in want]


async def test_hostile_names_and_text_round_trip_as_data(
    read_pipeline: ReadPipeline, tmp_path: Path, reliability: Reliability
) -> None:
    tables_before = await data_tables(read_pipeline.dsn)
    assert "runstream_data.runs" in tables_before
    ws = read_pipeline.workspace()
    tags: dict[str, str | None] = {
        key: HOSTILE_TEXT[(i + 7) % len(HOSTILE_TEXT)] for i, key in enumerate(HOSTILE)
    }
    tags["bare tag"] = None
    properties = {key: HOSTILE_TEXT[(i + 3) % len(HOSTILE_TEXT)] for i, key in enumerate(HOSTILE)}
    files = {
        name: hashlib.sha256(name.encode()).digest() * (i + 1)
        for i, name in enumerate(HOSTILE_FILES)
    }
    metrics = {name: float(i) + 0.5 for i, name in enumerate(HOSTILE) if name != TEXT_SERIES}
    lists: dict[str, list[Any]] = {
        name: [*HOSTILE_TEXT[i:], i, True, math.inf] for i, name in enumerate(HOSTILE)
    }
    columns: dict[str, list[Any]] = {name: [HOSTILE_TEXT[i], i] for i, name in enumerate(HOSTILE)}

    def train() -> dict[str, Run]:
        exp = Experiment(ws, "hostile")
        runs: dict[str, Run] = {}
        with exp.start_logging(
            display_name=HOSTILE[0], properties=properties, outputs_dir=None
        ) as run:
            runs["metrics"] = run
            for name, value in metrics.items():
                run.log(name, value)
            for i, text in enumerate(HOSTILE_TEXT):
                run.log(TEXT_SERIES, text, step=i)
            for key, tag_value in tags.items():
                run.tag(key, tag_value)
            for name, data in files.items():
                run.upload_file(name, io.BytesIO(data))
            for i in range(5):
                child = run.child_run(HOSTILE[-1 - i])
                runs[f"child{i}"] = child
                child.complete()
        with exp.start_logging(display_name=HOSTILE[-1], outputs_dir=None) as run:
            runs["lists"] = run
            for name, values in lists.items():
                run.log_list(name, values)
        with exp.start_logging(display_name="\u202e", outputs_dir=None) as run:
            runs["tables"] = run
            for name in HOSTILE:
                run.log_table(name, columns)
                run.log_row(name, **{col: values[0] for col, values in columns.items()})
        ws.close(60.0)
        return runs

    runs = await call(train)
    await read_pipeline.drained()
    main, list_run, table_run = runs["metrics"], runs["lists"], runs["tables"]

    # -- through the SDK's read side -----------------------------------------------------
    got = await call(main.get_metrics)
    assert mismatch(got, {**metrics, TEXT_SERIES: HOSTILE_TEXT}) is None
    for name in HOSTILE[:8]:
        one = await call(main.get_metrics, name)
        assert mismatch(one, {name: got[name]}) is None
    assert mismatch(await call(list_run.get_metrics), lists) is None
    table = {col: [*values, values[0]] for col, values in columns.items()}
    assert mismatch(await call(table_run.get_metrics), dict.fromkeys(HOSTILE, table)) is None

    details = await call(main.get_details)
    assert details["display_name"] == HOSTILE[0]
    assert details["tags"] == tags
    assert details["properties"] == properties
    assert sorted(details["children"]) == sorted(runs[f"child{i}"].id for i in range(5))
    for i in range(5):
        child_details = await call(runs[f"child{i}"].get_details)
        assert child_details["display_name"] == HOSTILE[-1 - i]
        assert child_details["parent_run_id"] == main.id
    same_text(sorted(await call(main.get_file_names)), sorted(files))
    for i, (name, data) in enumerate(files.items()):
        written = await call(main.download_file, name, tmp_path / "downloads" / f"{i}.bin")
        assert written.read_bytes() == data, name

    # -- raw HTTP: names with '/', '?', '#', '%' quoted as one path segment ----------------
    for name in [n for n in metrics if set(n) & set("/?#%&=+\\. ")] + ["😀" * 255]:
        path = f"/v1/runs/{quote(main.id, safe='')}/metrics/{quote(name, safe='')}"
        series = await call(http_json, read_pipeline, path)
        assert (series["name"], series["run_id"]) == (name, main.id)
        assert [p["value"] for p in series["points"]] == [metrics[name]]
        by_name = await call(http_json, read_pipeline,
                             f"/v1/runs/{main.id}/metrics?name={quote(name)}")
        assert by_name["metrics"] == {name: metrics[name]}
    listed = await call(http_json, read_pipeline, f"/v1/runs?tag={quote(HOSTILE[0])}")
    assert [r["run_id"] for r in listed["runs"]] == [main.id]
    tag_and_value = quote(f"{HOSTILE[2]}:{tags[HOSTILE[2]]}")
    listed = await call(http_json, read_pipeline, f"/v1/runs?tag={tag_and_value}")
    assert [r["run_id"] for r in listed["runs"]] == [main.id]
    ordered = await call(http_json, read_pipeline,
                         f"/v1/runs?order_by={quote('metric:' + HOSTILE[0])}")
    assert ordered["runs"][0]["run_id"] == main.id

    # -- the analytics views ---------------------------------------------------------------
    points = await read_pipeline.rows(
        "SELECT name, value, value_text, step FROM runstream.metric_points WHERE run_id = $1",
        main.id,
    )
    assert {r["name"]: r["value"] for r in points if r["name"] != TEXT_SERIES} == metrics
    texts = sorted((r["step"], r["value_text"]) for r in points if r["name"] == TEXT_SERIES)
    same_text([t for _, t in texts], HOSTILE_TEXT)
    tag_rows = await read_pipeline.rows(
        "SELECT key, value FROM runstream.tags WHERE run_id = $1", main.id
    )
    assert {r["key"]: r["value"] for r in tag_rows} == tags
    run_rows = await read_pipeline.rows(
        "SELECT run_id, display_name, properties, experiment FROM runstream.runs"
    )
    by_id = {r["run_id"]: r for r in run_rows}
    assert by_id[main.id]["display_name"] == HOSTILE[0]
    assert by_id[table_run.id]["display_name"] == "\u202e"
    stored_props = by_id[main.id]["properties"]
    assert (json.loads(stored_props) if isinstance(stored_props, str) else stored_props) == (
        properties
    )
    artifact_rows = await read_pipeline.rows(
        "SELECT name FROM runstream.artifacts WHERE run_id = $1 ORDER BY name", main.id
    )
    same_text([r["name"] for r in artifact_rows], sorted(files))
    list_rows = await read_pipeline.rows(
        "SELECT name, value_text FROM runstream.lists WHERE run_id = $1 AND kind = 'str' "
        "ORDER BY name, idx",
        list_run.id,
    )
    for name, values in lists.items():
        same_text(
            [r["value_text"] for r in list_rows if r["name"] == name],
            [v for v in values if isinstance(v, str)],
        )
    cell_rows = await read_pipeline.rows(
        "SELECT DISTINCT name, column_name FROM runstream.table_cells WHERE run_id = $1",
        table_run.id,
    )
    assert sorted((r["name"], r["column_name"]) for r in cell_rows) == sorted(
        (name, col) for name in HOSTILE for col in columns
    )

    # -- and nothing was executed, nothing dead-lettered ------------------------------------
    dead = await read_pipeline.rows("SELECT reason, detail FROM runstream.dead_letters")
    assert dead == []
    assert await data_tables(read_pipeline.dsn) == tables_before
    counted = await read_pipeline.rows("SELECT count(*) AS n FROM runstream_data.runs")
    reliability.record(
        guarantee="SQL only with parameters: hostile names and text round-trip as data",
        faults=f"{len(HOSTILE)} hostile names (SQL, $1, %s, quotes, backticks, JSON, <script>, "
        f"RTL, ZWJ, combining marks, 255 emoji) as metric/list/table/column names, tag keys, "
        f"properties, display names; {len(HOSTILE_TEXT)} hostile texts as values; "
        f"{len(HOSTILE_FILES)} hostile artifact names",
        points=len(points),
        storage=await storage_backend(read_pipeline.dsn),
        section=SECURITY,
        notes=f"{counted[0]['n']} runs read back equal through the SDK, raw HTTP and the views; "
        f"{len(dead)} dead "
        f"letters; {len(tables_before)} data tables before and after",
    )
    assert counted[0]["n"] == len(runs)


async def test_experiment_names_allowed_round_trip_and_the_rest_are_refused_clearly(
    read_pipeline: ReadPipeline,
) -> None:
    ws = read_pipeline.workspace()
    for name in REFUSED_EXPERIMENTS:
        with pytest.raises(ValueError, match=r"experiment name .* must be 1-255 letters, digits"):
            Experiment(ws, name)
    too_long_for_runs = Experiment(ws, "e" * 236)
    with pytest.raises(ValueError, match="at most 235 characters"):
        too_long_for_runs.start_logging(outputs_dir=None)

    def train() -> list[Run]:
        runs = []
        for name in EXPERIMENTS:
            with Experiment(ws, name).start_logging(outputs_dir=None) as run:
                run.log("x", 1.0)
            runs.append(run)
        ws.close(30.0)
        return runs

    runs = await call(train)
    await read_pipeline.drained()
    reader = read_pipeline.workspace("reader")
    for name, run in zip(EXPERIMENTS, runs, strict=True):
        assert run.id.startswith(f"{name}_")
        assert len(run.id) <= 255
        found = await call(lambda n=name: [r.id for r in Experiment(reader, n).get_runs()])
        assert found == [run.id]
        attached = await call(reader.get_run, run.id)
        assert attached.experiment.name == name
        assert await call(attached.get_metrics) == {"x": 1.0}
    stored = await read_pipeline.rows("SELECT DISTINCT experiment FROM runstream.runs ORDER BY 1")
    assert [r["experiment"] for r in stored] == sorted(EXPERIMENTS)


async def test_the_longest_names_the_worker_accepts_are_stored_and_served(
    new_db: NewDb, tmp_path: Path
) -> None:
    """Names at the decode limits (1024 UTF-8 bytes of 4-byte characters; a 256-character
    run id of 4-byte characters; a 64-character producer id) fit every index: the store
    takes them and the API serves them back. (PostgreSQL refuses index entries over 2704
    bytes: a 700-character name of 4-byte characters would not fit beside such a run id.)"""
    dsn = await new_db()
    blobs = BlobStore(root=tmp_path / "blobs")
    name = "😀" * (MAX_NAME_BYTES // 4)
    rid = "😀" * MAX_ID_CHARS
    f = EventFactory(rid, experiment="x" * MAX_ID_CHARS, producer_id="p" * MAX_PRODUCER_ID_CHARS)
    data = b"longest"
    digest = hashlib.sha256(data).hexdigest()

    async def chunks() -> AsyncIterator[bytes]:
        yield data

    await blobs.put(digest, chunks())
    events = [
        f.lifecycle("Running", display_name=name, compute_target="😀" * MAX_ID_CHARS),
        f.metrics(packed_series(name, [1.0, 2.0], steps=[0, 1])),
        f.list_value(name[:-1] + "L", [1]),
        f.row(name[:-1] + "R", {name: 1}),
        f.table(name[:-1] + "T", {name: [2]}),
        f.tag(name, name),
        f.artifact(name, digest, len(data)),
    ]
    await store_events(dsn, events)

    async with AsyncExitStack() as exits:
        url = await start_api(
            exits, dsn=dsn, blob_root=tmp_path / "blobs", token=READ_TOKEN,
            registry=CollectorRegistry(),
        )
        # Raw HTTP: the SDK's own run-id limit (255 characters) is under this one.
        run_path = f"{url}/v1/runs/{quote(rid, safe='')}"
        metrics = await call(get_json, f"{run_path}/metrics")
        assert metrics["metrics"] == {
            name: [1.0, 2.0],
            name[:-1] + "L": [1],
            name[:-1] + "R": {name: [1]},
            name[:-1] + "T": {name: [2]},
        }
        details = await call(get_json, run_path)
        assert (details["display_name"], details["tags"]) == (name, {name: name})
        files = await call(get_json, f"{run_path}/files")
        assert [f["name"] for f in files["files"]] == [name]
        assert await call(get_bytes, f"{run_path}/files/{quote(name)}") == data
        series = await call(get_json, f"{run_path}/metrics/{quote(name, safe='')}")
        assert [p["value"] for p in series["points"]] == [1.0, 2.0]


def get_bytes(url: str) -> bytes:
    auth = {"Authorization": f"Bearer {READ_TOKEN}"}
    request = urllib.request.Request(url, headers=auth)  # noqa: S310 - the test's http server
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
        body: bytes = answer.read()
        return body


def get_json(url: str) -> Any:
    return json.loads(get_bytes(url))


async def test_strings_spelled_like_non_finite_floats_read_back_as_strings(
    read_pipeline: ReadPipeline,
) -> None:
    ws = read_pipeline.workspace()

    def train() -> Run:
        with Experiment(ws, "spelled").start_logging(outputs_dir=None) as run:
            for i, text in enumerate(NON_FINITE_SPELLINGS):
                run.log(f"point {i}", text)
            run.log_list("list", NON_FINITE_SPELLINGS)
            run.log_row("row", text=NON_FINITE_SPELLINGS[0])
        ws.close(30.0)
        return run

    run = await call(train)
    await read_pipeline.drained()
    stored = await read_pipeline.rows(
        "SELECT value_text, kind FROM runstream.lists WHERE run_id = $1 ORDER BY idx", run.id
    )
    assert [(r["value_text"], r["kind"]) for r in stored] == [
        (t, "str") for t in NON_FINITE_SPELLINGS
    ]
    expected = {
        **{f"point {i}": text for i, text in enumerate(NON_FINITE_SPELLINGS)},
        "list": NON_FINITE_SPELLINGS,
        "row": {"text": NON_FINITE_SPELLINGS[0]},  # one row is bare, as in azureml-core
    }
    assert mismatch(await call(run.get_metrics), expected) is None

    # On the wire: a string spelled like a non-finite float is {"str": …}; floats are not.
    answer = await call(get_json, f"{read_pipeline.api_url}/v1/runs/{run.id}/metrics")
    assert answer["metrics"]["point 0"] == {"str": "NaN"}
    assert answer["metrics"]["list"] == [{"str": t} for t in NON_FINITE_SPELLINGS]


async def test_a_metric_named_str_holding_nan_reads_back_as_a_float(
    read_pipeline: ReadPipeline,
) -> None:
    """The escape {"str": s} is read in value positions only, never in the dict of names."""
    ws = read_pipeline.workspace()

    def train() -> Run:
        with Experiment(ws, "spelled").start_logging(outputs_dir=None) as run:
            run.log("str", math.nan)
            run.log_list("also", [math.inf, "Infinity", "x"])
        ws.close(30.0)
        return run

    run = await call(train)
    await read_pipeline.drained()
    got = await call(run.get_metrics)
    assert set(got) == {"str", "also"}
    assert isinstance(got["str"], float)
    assert math.isnan(got["str"])
    assert got["also"] == [math.inf, "Infinity", "x"]
