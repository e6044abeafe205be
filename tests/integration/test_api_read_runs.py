"""The /v1 query endpoints (experiments, runs, one run, children, files, logs, compute)
through the real server, on a database filled through the real store write path."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest

from ingest.bench.events import EventFactory, packed_series
from ingest.bench.read import store_events
from tests.integration.api_reads import (
    ReadApi,
    World,
    build_world,
    error_message,
    get_json,
    read_api,
    sha,
)
from tests.integration.helpers import NewDb, run_id
from tests.integration.helpers import fetch as fetch_rows

TOKEN = "read-token"  # noqa: S105 - a test credential


@pytest.fixture
async def dsn(new_db: NewDb) -> str:
    return await new_db()


@pytest.fixture
async def api(dsn: str, tmp_path: Path) -> AsyncIterator[ReadApi]:
    async with read_api(dsn, tmp_path / "blobs", public_url="https://runstream.example") as a:
        yield a


@pytest.fixture
async def world(dsn: str, api: ReadApi) -> World:
    return await build_world(dsn, api.blobs)


def url(api: ReadApi, path: str, **params: str | int | list[str]) -> str:
    query = urlencode(params, doseq=True)
    return f"{api.url}{path}" + (f"?{query}" if query else "")


async def run_ids(http: aiohttp.ClientSession, api: ReadApi, **params: str | int | list[str]
                  ) -> list[str]:
    """Every run id of /v1/runs with ``params``, walking all pages."""
    out: list[str] = []
    cursor: str | None = None
    for _ in range(100):
        page_params = dict(params) if cursor is None else {**params, "cursor": cursor}
        page = await get_json(http, url(api, "/v1/runs", **page_params))
        out += [r["run_id"] for r in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return out
    raise AssertionError("pagination never ended")


# -- experiments and run lists ----------------------------------------------------------------


async def test_experiments_with_counts_walked_page_by_page(
    http: aiohttp.ClientSession, api: ReadApi, world: World
) -> None:
    first = await get_json(http, url(api, "/v1/experiments", limit=1))
    assert [e["name"] for e in first["experiments"]] == ["alpha"]
    assert first["experiments"][0]["runs"] == 6
    assert first["experiments"][0]["workspace"] == "default"
    assert first["experiments"][0]["last_run_at"].endswith("+00:00")
    # by status, in the order of the lifecycle; the last activity is the latest event.
    assert first["experiments"][0]["statuses"] == {
        "Queued": 1, "Running": 1, "Completed": 3, "Failed": 1}
    assert first["experiments"][0]["last_activity_at"] >= first["experiments"][0]["last_run_at"]
    second = await get_json(http, url(api, "/v1/experiments", limit=1,
                                      cursor=first["next_cursor"]))
    assert [(e["name"], e["runs"]) for e in second["experiments"]] == [("beta", 1)]
    assert second["next_cursor"] is None


async def test_runs_newest_first_with_summaries(
    http: aiohttp.ClientSession, api: ReadApi, world: World
) -> None:
    page = await get_json(http, url(api, "/v1/runs"))
    ids = [r["run_id"] for r in page["runs"]]
    assert ids == list(reversed(world.all_runs))
    assert page["next_cursor"] is None
    finished = next(r for r in page["runs"] if r["run_id"] == world.finished)
    assert finished == {
        "run_id": world.finished, "experiment": "alpha", "workspace": "default",
        "parent_run_id": None, "display_name": "ridge", "status": "Completed",
        "compute_target": "gpu", "created_at": finished["created_at"],
        "queued_at": finished["created_at"], "started_at": finished["started_at"],
        "ended_at": finished["ended_at"], "tags": {"selected": "yes", "baseline": None},
        "description": None,
    }
    assert finished["started_at"] > finished["created_at"]
    assert await run_ids(http, api, order="asc") == world.all_runs


@pytest.mark.parametrize("limit", [1, 2, 3, 7])
@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_walking_pages_sees_every_run_once(
    http: aiohttp.ClientSession, api: ReadApi, world: World, limit: int, order: str
) -> None:
    ids = await run_ids(http, api, limit=limit, order=order)
    expected = world.all_runs if order == "asc" else list(reversed(world.all_runs))
    assert ids == expected


async def test_runs_filtered(http: aiohttp.ClientSession, api: ReadApi, world: World) -> None:
    async def ids(**params: str | int | list[str]) -> set[str]:
        return set(await run_ids(http, api, **params))

    w = world
    assert await ids(experiment="beta") == {w.other_experiment}
    assert await ids(status="Completed") == {w.finished, *w.children, w.other_experiment}
    assert await ids(status=["Failed", "Queued"]) == {w.failed, w.queued}
    assert await ids(status="Failed,Queued") == {w.failed, w.queued}
    assert await ids(tag="selected") == {w.finished, w.failed}
    assert await ids(tag="selected:yes") == {w.finished}
    assert await ids(tag=["selected", "baseline"]) == {w.finished}
    assert await ids(tag="selected:maybe") == set()
    assert await ids(compute_target="cpu") == {w.parent, *w.children}
    assert await ids(parent_run_id=w.parent) == set(w.children)
    assert await ids(experiment="alpha", compute_target="gpu", status="Queued") == {w.queued}
    created = {r: await _created_at(http, api, r) for r in w.all_runs}
    middle = created[w.parent]
    assert await ids(created_after=middle) == {*w.children, w.queued, w.other_experiment}
    assert await ids(created_before=middle) == {w.finished, w.failed}
    assert await ids(created_after=created[w.finished], created_before=middle) == {w.failed}
    naive = middle.replace("+00:00", "")  # no zone: UTC
    assert await ids(created_before=naive) == {w.finished, w.failed}


async def _created_at(http: aiohttp.ClientSession, api: ReadApi, rid: str) -> str:
    created: str = (await get_json(http, url(api, f"/v1/runs/{rid}")))["created_at"]
    return created


async def test_runs_ordered_by_a_metrics_last_value(
    http: aiohttp.ClientSession, api: ReadApi, world: World
) -> None:
    # last loss: finished 0.125 (step 3), failed 0.6 (step 2), parent 0.3; others none.
    by_loss = await run_ids(http, api, order_by="metric:loss", order="asc", experiment="alpha")
    assert by_loss[:3] == [world.finished, world.parent, world.failed]
    assert set(by_loss[3:]) == {*world.children, world.queued}
    desc = await run_ids(http, api, order_by="metric:loss", experiment="alpha")
    assert desc[:3] == [world.failed, world.parent, world.finished]
    assert set(desc[3:]) == {*world.children, world.queued}
    for limit in (1, 2, 4):
        assert await run_ids(http, api, order_by="metric:loss", order="asc",
                             experiment="alpha", limit=limit) == by_loss


async def test_run_lists_carry_summaries_of_the_metrics_asked_for(
    http: aiohttp.ClientSession, api: ReadApi, world: World
) -> None:
    """``?metric=``: each run's last/min/max/count of those series (the dashboard's metric
    columns in one request); a run without the series leaves it out."""
    page = await get_json(http, url(api, "/v1/runs", experiment="alpha",
                                    metric=["loss", "alpha", "mse", "nope"]))
    got = {r["run_id"]: r["metrics"] for r in page["runs"]}
    assert got[world.finished] == {
        "loss": {"kind": "series", "count": 4, "last": 0.125, "min": 0.125, "max": 0.9},
        "alpha": {"kind": "value", "count": 1, "last": 0.5, "min": 0.5, "max": 0.5},
    }
    assert got[world.failed] == {
        "loss": {"kind": "series", "count": 3, "last": 0.6, "min": 0.6, "max": 1e6}}
    assert got[world.queued] == {}
    for child in world.children:
        assert set(got[child]) == {"mse"}
    # The same on a run's children, and nothing added without ?metric=.
    kids = await get_json(http, url(api, f"/v1/runs/{world.parent}/children", metric="mse"))
    assert [r["metrics"]["mse"]["last"] for r in kids["runs"]] == [3.1, 2.1]
    plain = await get_json(http, url(api, "/v1/runs", experiment="alpha"))
    assert all("metrics" not in r for r in plain["runs"])
    message = await error_message(http, url(api, "/v1/runs", metric=[str(i) for i in range(21)]),
                                  400)
    assert "1 to 20 metric names" in message


async def test_metric_names_of_an_experiment_and_of_a_runs_children(
    http: aiohttp.ClientSession, api: ReadApi, world: World
) -> None:
    names = await get_json(http, url(api, "/v1/metric-names", experiment="alpha"))
    by_name = {n["name"]: n for n in names["names"]}
    assert names["runs_scanned"] == 6
    assert list(by_name) == sorted(by_name)
    assert by_name["loss"] == {"name": "loss", "kinds": ["series"], "runs": 3}
    assert by_name["mse"]["runs"] == 2
    assert by_name["accuracies"]["kinds"] == ["list"]
    assert by_name["Sine"]["kinds"] == ["table"]
    kids = await get_json(http, url(api, "/v1/metric-names", parent_run_id=world.parent))
    assert kids == {"names": [{"name": "mse", "kinds": ["series"], "runs": 2}],
                    "runs_scanned": 2}
    newest = await get_json(http, url(api, "/v1/metric-names", experiment="alpha", runs=1))
    assert newest == {"names": [], "runs_scanned": 1}  # the queued run logged nothing
    nothing = await get_json(http, url(api, "/v1/metric-names", experiment="nope"))
    assert nothing == {"names": [], "runs_scanned": 0}


async def test_runs_filtered_by_a_metrics_last_value(
    http: aiohttp.ClientSession, api: ReadApi, world: World
) -> None:
    # last loss: finished 0.125, parent 0.3, failed 0.6; the others have none.
    async def ids(*filters: str, **params: str) -> set[str]:
        return set(await run_ids(http, api, experiment="alpha",
                                 metric_filter=list(filters), **params))

    assert await ids("loss<0.5") == {world.finished, world.parent}
    assert await ids("loss >= 0.3") == {world.parent, world.failed}
    assert await ids("loss>0.1", "loss<0.4") == {world.finished, world.parent}
    assert await ids("loss=0.125") == {world.finished}
    assert await ids("mse<=2.1") == {world.children[1]}
    assert await ids("nope<1") == set()
    ordered = await run_ids(http, api, experiment="alpha", metric_filter=["loss<0.5"],
                            order_by="metric:loss", order="asc")
    assert ordered == [world.finished, world.parent]
    for bad in ("loss", "loss<", "<1", "loss<abc", "loss<nan"):
        message = await error_message(http, url(api, "/v1/runs", metric_filter=bad), 400)
        assert "metric_filter" in message, bad


async def test_metric_order_ties_and_non_numbers(
    http: aiohttp.ClientSession, api: ReadApi, dsn: str
) -> None:
    runs = {name: run_id("ties") for name in ("a", "b", "c", "nan", "text", "inf")}
    events = []
    for key, value in (("a", 1.0), ("b", 1.0), ("c", 2.0), ("nan", float("nan")),
                       ("text", "high"), ("inf", float("inf"))):
        f = EventFactory(runs[key], experiment="ties")
        # The last value is at the highest step, whatever order it was logged in.
        events.append(f.metrics(packed_series("m", [value, -5.0], steps=[9, 1])))
    await store_events(dsn, events)
    ordered = await run_ids(http, api, experiment="ties", order_by="metric:m", order="asc",
                            limit=1)
    assert ordered[:4] == [*sorted([runs["a"], runs["b"]]), runs["c"], runs["inf"]]
    assert set(ordered[4:]) == {runs["nan"], runs["text"]}


# -- one run -----------------------------------------------------------------------------------


async def test_run_details(http: aiohttp.ClientSession, api: ReadApi, world: World) -> None:
    d = await get_json(http, url(api, f"/v1/runs/{world.finished}"))
    assert d["status"] == "Completed"
    times = d["status_times"]
    assert set(times) == {"NotStarted", "Queued", "Preparing", "Running", "Finalizing",
                          "CancelRequested", "Completed", "Failed", "Canceled"}
    assert times["Queued"] == d["queued_at"] == d["created_at"]
    assert times["Running"] == d["started_at"]
    assert times["Completed"] == d["ended_at"]
    assert times["Queued"] < times["Running"] < times["Finalizing"] < times["Completed"]
    assert times["NotStarted"] is times["Preparing"] is times["Failed"] is None
    assert d["properties"] == {"alpha": "0.5"}
    assert d["error"] is None
    assert d["children"] == []
    assert d["portal_url"] == f"https://runstream.example/runs/{world.finished}"

    failed = await get_json(http, url(api, f"/v1/runs/{world.failed}"))
    assert (failed["status"], failed["error"]) == ("Failed", "CUDA out of memory")

    parent = await get_json(http, url(api, f"/v1/runs/{world.parent}"))
    assert parent["children"] == world.children
    assert parent["dropped_events"] == 3
    assert parent["last_heartbeat_at"] is not None
    child = await get_json(http, url(api, f"/v1/runs/{world.children[1]}"))
    assert (child["parent_run_id"], child["display_name"]) == (world.parent, "fold-1")


async def test_portal_url_defaults_to_the_requests_origin(
    http: aiohttp.ClientSession, dsn: str, tmp_path: Path
) -> None:
    rid = run_id()
    await store_events(dsn, [EventFactory(rid).lifecycle("Running")])
    async with read_api(dsn, tmp_path / "b") as api:
        d = await get_json(http, url(api, f"/v1/runs/{rid}"))
    assert d["portal_url"] == f"{api.url}/runs/{rid}"


async def test_children_oldest_first_paged(
    http: aiohttp.ClientSession, api: ReadApi, world: World
) -> None:
    first = await get_json(http, url(api, f"/v1/runs/{world.parent}/children", limit=1))
    second = await get_json(http, url(api, f"/v1/runs/{world.parent}/children", limit=1,
                                      cursor=first["next_cursor"]))
    assert [r["run_id"] for r in first["runs"] + second["runs"]] == world.children
    assert second["next_cursor"] is None
    none = await get_json(http, url(api, f"/v1/runs/{world.queued}/children"))
    assert none == {"runs": [], "next_cursor": None}


async def test_files_list_and_download(
    http: aiohttp.ClientSession, api: ReadApi, world: World
) -> None:
    listing = await get_json(http, url(api, f"/v1/runs/{world.finished}/files"))
    assert [f["name"] for f in listing["files"]] == sorted(world.files)
    for f in listing["files"]:
        data = world.files[f["name"]]
        assert (f["sha256"], f["size_bytes"], f["kind"]) == (sha(data), len(data), "FILE")
    for name, data in world.files.items():
        async with http.get(f"{api.url}/v1/runs/{world.finished}/files/{quote(name)}") as r:
            assert r.status == 200
            assert await r.read() == data
            assert r.headers["Content-Length"] == str(len(data))
            expected = "text/plain" if name.endswith(".txt") else "application/octet-stream"
            assert r.content_type == expected
    # A slash may also come percent-encoded (the SDK quotes names segment by segment).
    async with http.get(f"{api.url}/v1/runs/{world.finished}/files/notes%2Freadme.txt") as r:
        assert await r.read() == world.files["notes/readme.txt"]
    assert await get_json(http, url(api, f"/v1/runs/{world.failed}/files")) == {"files": []}


async def test_bytes_uploaded_through_the_api_come_back(
    http: aiohttp.ClientSession, api: ReadApi, world: World, dsn: str
) -> None:
    data = bytes(range(256)) * 4099  # about 1 MiB: several read chunks
    async with http.put(f"{api.url}/v1/blobs/{sha(data)}", data=io.BytesIO(data)) as r:
        assert r.status == 201
    f = EventFactory(world.failed, experiment="alpha")
    await store_events(dsn, [f.artifact("outputs/ckpt/last.pt", sha(data), len(data),
                                        kind="IMAGE", content_type="image/png")])
    listing = await get_json(http, url(api, f"/v1/runs/{world.failed}/files"))
    assert [(x["name"], x["kind"], x["size_bytes"]) for x in listing["files"]] == [
        ("outputs/ckpt/last.pt", "IMAGE", len(data))]
    async with http.get(f"{api.url}/v1/runs/{world.failed}/files/outputs/ckpt/last.pt") as r:
        assert r.status == 200
        assert r.content_type == "image/png"
        assert await r.read() == data


async def test_file_download_404s(
    http: aiohttp.ClientSession, api: ReadApi, world: World, dsn: str
) -> None:
    base = f"{api.url}/v1/runs/{world.finished}/files"
    assert "no file" in await error_message(http, f"{base}/nope.bin", 404)
    assert "no run" in await error_message(http, f"{api.url}/v1/runs/nope/files/x", 404)
    # The event references bytes that never reached the blob store.
    f = EventFactory(world.finished, experiment="alpha")
    await store_events(dsn, [f.artifact("lost.bin", "ab" * 32, 10)])
    assert "not in the blob store" in await error_message(http, f"{base}/lost.bin", 404)


async def test_logs_in_order_with_a_tail_cursor(
    http: aiohttp.ClientSession, api: ReadApi, world: World, dsn: str
) -> None:
    base = f"/v1/runs/{world.finished}/logs"
    page = await get_json(http, url(api, base))
    assert [(line["stream"], line["line"], line["rank"]) for line in page["lines"]] == [
        ("stdout", "epoch 1", 0), ("stdout", "epoch 2", 0), ("stderr", "warning: slow", 0)]
    one = await get_json(http, url(api, base, limit=1))
    two = await get_json(http, url(api, base, limit=1, after=one["next_cursor"]))
    three = await get_json(http, url(api, base, limit=5, after=two["next_cursor"]))
    assert [p["lines"][0]["line"] for p in (one, two)] == ["epoch 1", "epoch 2"]
    assert [line["line"] for line in three["lines"]] == ["warning: slow"]
    # The tail cursor: nothing new yet, then exactly the lines committed since.
    idle = await get_json(http, url(api, base, after=three["next_cursor"]))
    assert idle == {"lines": [], "next_cursor": three["next_cursor"]}
    f = EventFactory(world.finished, experiment="alpha")
    await store_events(dsn, [f.log_lines("stdout", ["done"])])
    new = await get_json(http, url(api, base, after=three["next_cursor"]))
    assert [line["line"] for line in new["lines"]] == ["done"]
    assert await get_json(http, url(api, f"/v1/runs/{world.failed}/logs")) == {
        "lines": [], "next_cursor": None}


# -- compute targets ---------------------------------------------------------------------------


async def test_compute_targets_and_active_runs(
    http: aiohttp.ClientSession, api: ReadApi, world: World
) -> None:
    targets = {t["compute_target"]: t for t in
               (await get_json(http, url(api, "/v1/compute")))["targets"]}
    assert set(targets) == {"cpu", "gpu"}
    gpu = targets["gpu"]
    assert (gpu["queued"], gpu["preparing"], gpu["running"], gpu["not_responding"]) == (
        1, 0, 0, 0)
    assert (gpu["completed_1h"], gpu["failed_1h"], gpu["canceled_1h"]) == (1, 0, 0)
    assert gpu["oldest_queued_age_s"] > 3600
    # Queue waits of finished (10 s) and failed (30 s).
    assert gpu["queue_wait_p50_s"] == pytest.approx(20.0)
    assert gpu["queue_wait_p95_s"] == pytest.approx(29.0)
    assert targets["cpu"]["running"] == 1
    assert targets["cpu"]["queue_wait_p50_s"] is None

    detail = await get_json(http, url(api, "/v1/compute/gpu"))
    assert detail["oldest_queued_age_s"] == pytest.approx(gpu.pop("oldest_queued_age_s"), abs=5)
    assert gpu.pop("agents") == {"alive": 0, "slots": 0, "busy": 0}
    assert {k: v for k, v in detail.items() if k not in (
        "active_runs", "oldest_queued_age_s", "queue", "leased", "agents")} == gpu
    # nothing was submitted to gpu (its runs logged themselves): no queue entries or agents
    assert (detail["queue"], detail["leased"], detail["agents"]) == ([], [], [])
    assert [r["run_id"] for r in detail["active_runs"]] == [world.queued]
    cpu = await get_json(http, url(api, "/v1/compute/cpu"))
    assert [r["run_id"] for r in cpu["active_runs"]] == [world.parent]
    assert "no compute target" in await error_message(http, url(api, "/v1/compute/tpu"), 404)


# -- errors, auth, health, metrics ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "named"),
    [
        ("/v1/runs", {"limit": 0}, "limit"),
        ("/v1/runs", {"limit": 1001}, "limit"),
        ("/v1/runs", {"limit": "ten"}, "limit"),
        ("/v1/runs", {"status": "Sleeping"}, "status"),
        ("/v1/runs", {"status": "Running,"}, "status"),
        ("/v1/runs", {"order": "sideways"}, "order"),
        ("/v1/runs", {"order_by": "name"}, "order_by"),
        ("/v1/runs", {"order_by": "metric:"}, "order_by"),
        ("/v1/runs", {"created_after": "yesterday"}, "created_after"),
        ("/v1/runs", {"created_before": "2026-13-01"}, "created_before"),
        ("/v1/runs", {"tag": ":v"}, "tag"),
        ("/v1/runs", {"experiment": ["a", "b"]}, "experiment"),
        ("/v1/runs", {"experiment": ""}, "experiment"),
        ("/v1/runs", {"cursor": "not-a-cursor"}, "cursor"),
        ("/v1/experiments", {"cursor": "e30"}, "cursor"),
        ("/v1/experiments", {"limit": -1}, "limit"),
    ],
)
async def test_bad_parameters_are_400_naming_them(
    http: aiohttp.ClientSession, api: ReadApi, path: str, params: dict[str, str | int | list[str]],
    named: str,
) -> None:
    assert repr(named) in await error_message(http, url(api, path, **params), 400)


async def test_a_cursor_only_continues_its_own_listing(
    http: aiohttp.ClientSession, api: ReadApi, world: World
) -> None:
    page = await get_json(http, url(api, "/v1/runs", limit=1))
    for other in ({"order": "asc"}, {"order_by": "metric:loss"}):
        message = await error_message(
            http, url(api, "/v1/runs", limit=1, cursor=page["next_cursor"], **other), 400)
        assert "'cursor'" in message
    logs = f"/v1/runs/{world.finished}/logs"
    assert "'after'" in await error_message(
        http, url(api, logs, after=page["next_cursor"]), 400)


@pytest.mark.parametrize(
    "suffix", ["", "/children", "/files", "/files/a/b.txt", "/logs", "/metrics", "/metrics/loss"]
)
async def test_unknown_run_is_404(
    http: aiohttp.ClientSession, api: ReadApi, world: World, suffix: str
) -> None:
    assert "no run 'exp_1_nope'" in await error_message(
        http, f"{api.url}/v1/runs/exp_1_nope{suffix}", 404)


async def test_auth_on(http: aiohttp.ClientSession, dsn: str, tmp_path: Path) -> None:
    rid = run_id()
    await store_events(dsn, [EventFactory(rid).lifecycle("Running")])
    async with read_api(dsn, tmp_path / "b", token=TOKEN) as api:
        for path in ("/v1/runs", f"/v1/runs/{rid}", "/v1/experiments", "/v1/compute",
                     f"/v1/runs/{rid}/metrics", f"/v1/runs/{rid}/files/x", "/v1/runs/nope"):
            async with http.get(api.url + path) as r:
                assert r.status == 401, path
            async with http.get(api.url + path, headers={"Authorization": "Bearer no"}) as r:
                assert r.status == 403, path
        page = await get_json(http, url(api, "/v1/runs"), headers=api.headers)
        assert [r["run_id"] for r in page["runs"]] == [rid]
        async with http.get(f"{api.url}/readyz") as r:
            assert r.status == 200


async def test_readyz_checks_the_database(
    http: aiohttp.ClientSession, api: ReadApi, tmp_path: Path
) -> None:
    ready = await get_json(http, f"{api.url}/readyz")
    assert ready == {"status": "ready",
                     "checks": {"blobs": "ok", "database": "ok", "maintenance": "ok"}}


async def test_database_gone_is_503_not_500(
    http: aiohttp.ClientSession, api: ReadApi, dsn: str
) -> None:
    async with http.get(f"{api.url}/v1/runs") as r:
        assert r.status == 200
    parts = urlsplit(dsn)
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        await admin.execute(f'DROP DATABASE "{parts.path[1:]}" WITH (FORCE)')
    finally:
        await admin.close()
    for _ in range(2):  # the pooled connection is dead; then no new one can be made
        async with http.get(f"{api.url}/v1/runs") as r:
            assert r.status == 503
            assert r.headers["Retry-After"] == "1"
            assert "retry" in (await r.json())["error"]["message"]
    async with http.get(f"{api.url}/readyz") as r:
        assert r.status == 503
        assert (await r.json())["checks"] == {"blobs": "ok", "database": "failed",
                                              "maintenance": "unknown"}
    async with http.get(f"{api.url}/healthz") as r:
        assert r.status == 200


async def test_metrics_by_route_template_and_queue_gauges(
    http: aiohttp.ClientSession, api: ReadApi, world: World
) -> None:
    await get_json(http, url(api, f"/v1/runs/{world.finished}"))
    await get_json(http, url(api, f"/v1/runs/{world.finished}/metrics/loss"))
    async with http.get(f"{api.url}/v1/runs/{world.finished}/files/outputs/model.pkl") as r:
        await r.read()
    async with http.get(f"{api.url}/metrics") as r:
        text = await r.text()
    for rid in world.all_runs:
        assert rid not in text
    assert "model.pkl" not in text
    assert 'route="/v1/runs/{run_id}",status="200"' in text
    assert 'route="/v1/runs/{run_id}/metrics/{name}",status="200"' in text
    assert 'route="/v1/runs/{run_id}/files/{name}",status="200"' in text
    assert 'runstream_queue_runs{compute_target="gpu",state="queued"} 1.0' in text
    assert 'runstream_queue_runs{compute_target="cpu",state="running"} 1.0' in text
    assert 'runstream_queue_oldest_age_seconds{compute_target="gpu"}' in text


async def test_concurrent_reads(http: aiohttp.ClientSession, api: ReadApi, world: World) -> None:
    paths = [f"/v1/runs/{r}" for r in world.all_runs] * 10 + ["/v1/runs", "/v1/compute"] * 10
    results = await asyncio.gather(*(get_json(http, api.url + p) for p in paths))
    assert len(results) == len(paths)


# -- stored series summaries (migration 0012) ---------------------------------------------------


async def _list_answers(http: aiohttp.ClientSession, api: ReadApi, experiment: str,
                        ids: list[str]) -> dict[str, object]:
    """Everything a runs list answers from series summaries, for one experiment."""
    names = ["small", "big", "single", "none"]
    page = await get_json(http, url(api, "/v1/runs", experiment=experiment, metric=names))
    out: dict[str, object] = {"columns": {r["run_id"]: r["metrics"] for r in page["runs"]}}
    for order in ("asc", "desc"):
        out[f"big {order}"] = await run_ids(http, api, experiment=experiment,
                                            order_by="metric:big", order=order, limit=2)
        out[f"small {order}"] = await run_ids(http, api, experiment=experiment,
                                              order_by="metric:small", order=order)
    for flt in ("big>0.3", "big<=0.5", "small<0", "small>=-1e9"):
        out[flt] = await run_ids(http, api, experiment=experiment, metric_filter=flt)
    for rid in ids:
        out[rid] = await get_json(http, url(api, f"/v1/runs/{rid}/metric-index"))
    return out


async def test_stored_summaries_answer_as_the_points_do(
    http: aiohttp.ClientSession, api: ReadApi, dsn: str
) -> None:
    """Run lists read the series summaries the worker's tiler stores for quiet runs
    (``?metric=`` columns, ``order_by=metric:``, ``metric_filter=``, ``/metric-index``):
    the answers are the same whether a run's summary is stored, outdated (new events
    since) or absent — then computed from tiles plus untiled points, or from the points
    of a small series —, and match what was logged."""
    from ingest.worker.store import Store
    from ingest.worker.tiler import SeriesTiler

    experiment = "summaries"
    a, b, c, d, e = (run_id(experiment) for _ in range(5))
    t0 = 1_700_000_000_000_000
    events: list[dict[str, object]] = []

    def log(rid: str, name: str, values: list[object], steps: list[int], *, rank: int = 0,
            dt: int = 0) -> None:
        f = EventFactory(rid, experiment=experiment, rank=rank)
        events.append(f.metrics(packed_series(name, values, steps=steps,  # type: ignore[arg-type]
                                              times_us=[t0 + 10 * s + dt for s in steps])))

    events += [EventFactory(r, experiment=experiment).lifecycle("Running")
               for r in (a, b, c, d, e)]
    # a: a small series of every kind; its last point is rank 1's int (highest rank at the
    # highest step, as a small series' last is); booleans, NaN and infinities are left out
    # of its min/max.
    log(a, "small", [0.5, -2.0, "warmup", float("nan"), True, float("inf"), 0.25], list(range(7)))
    log(a, "small", [7], [6], rank=1, dt=-5)
    log(a, "single", [42], [0])
    # b: 30,000 points on two ranks, tiled, then an untiled tail of 3,000 holding the new
    # maximum, a boolean, and at the top step a string logged after rank 1's float.
    big: list[tuple[int, int, int, object]] = []
    for rank in (0, 1):
        for start in range(0, 15_000, 5000):
            steps = list(range(start, start + 5000))
            values: list[object] = [((s * 7919 + rank) % 1000) / 1000 for s in steps]
            if start == 5000 and rank == 1:
                values[17] = -55.0
            log(b, "big", values, steps, rank=rank)
            big += [(s, rank, t0 + 10 * s, v) for s, v in zip(steps, values, strict=True)]
    await store_events(dsn, events, tile=True)  # tiled and summarised, as the worker does
    events.clear()
    tail: list[tuple[int, int, int, object]] = []
    for rank in (0, 1):
        steps = list(range(15_000, 16_500))
        values = [0.125] * 1500
        if rank == 0:
            values[100], values[200], values[-1] = 77.0, True, "done"
        log(b, "big", values, steps, rank=rank, dt=0 if rank == 0 else -3)
        tail += [(s, rank, t0 + 10 * s, v) for s, v in zip(steps, values, strict=True)]
    # c: a small "big" whose top step has rank 1's value first and rank 0's later: its
    # column shows rank 1's (0.7), its sort value is the latest (0.2).
    log(c, "big", [0.9, 0.7], [0, 1], rank=1, dt=-1)
    log(c, "big", [0.2], [1], rank=0)
    log(c, "small", [-3.0], [0])
    log(e, "big", [0.5], [0])
    events += [EventFactory(r, experiment=experiment).lifecycle("Completed")
               for r in (a, c, d, e)]
    await store_events(dsn, events)
    tiled = await fetch_rows(dsn, "SELECT count(*) AS n FROM runstream_data.metric_tiled_chunks "
                                  "WHERE run_id = $1", b)
    assert tiled[0]["n"] == 6  # the tail is not in the tiles

    first = await _list_answers(http, api, experiment, [a, b, c, d, e])
    columns = first["columns"]
    assert isinstance(columns, dict)
    assert columns[a] == {
        "small": {"kind": "series", "count": 8, "last": 7, "min": -2.0, "max": 7.0},
        "single": {"kind": "value", "count": 1, "last": 42, "min": 42.0, "max": 42.0}}
    numbers = [v for *_, v in big + tail if isinstance(v, float | int)]
    assert columns[b] == {"big": {"kind": "series", "count": 33_000, "last": "done",
                                  "min": -55.0, "max": max(numbers)}}
    assert max(numbers) == 77.0
    assert columns[c] == {
        "big": {"kind": "series", "count": 3, "last": 0.7, "min": 0.2, "max": 0.9},
        "small": {"kind": "value", "count": 1, "last": -3.0, "min": -3.0, "max": -3.0}}
    assert columns[d] == {}
    assert first["big asc"][:2] == [c, e]  # type: ignore[index]
    assert first["big desc"][:2] == [e, c]  # type: ignore[index]
    assert first["big>0.3"] == [e]
    assert first["small<0"] == [c]

    # All computed (no stored summary), then all stored: the same answers.
    await fetch_rows(dsn, "DELETE FROM runstream_data.metric_summary_runs")
    assert await _list_answers(http, api, experiment, [a, b, c, d, e]) == first
    async with Store(dsn=dsn) as store:
        tiler = SeriesTiler(store, scan_interval_s=0)
        assert await tiler.summarize_due() == 5  # found: no summaries
        assert await tiler.summarize_due() == 0  # all current
        stored = await fetch_rows(
            dsn, "SELECT count(*) AS n FROM runstream_data.metric_summary_runs")
        assert stored[0]["n"] == 5
        assert await _list_answers(http, api, experiment, [a, b, c, d, e]) == first
        # (They are what was read: altered, the answers change; summarised again, they don't.)
        await fetch_rows(dsn, "UPDATE runstream_data.metric_series_summary SET points = 9 "
                              "WHERE run_id = $1 AND name = 'small'", c)
        await fetch_rows(dsn, "UPDATE runstream_data.metric_summary_runs "
                              "SET sort_values = '{-5}' WHERE run_id = $1", e)
        altered = await _list_answers(http, api, experiment, [a, b, c, d, e])
        assert altered["columns"][c]["small"]["count"] == 9  # type: ignore[index]
        assert altered["big asc"][:2] == [e, c]  # type: ignore[index]
        await tiler.summarize([c, e])
        assert await _list_answers(http, api, experiment, [a, b, c, d, e]) == first

        # An event after the summary (a point, then a status): the answers follow at once,
        # and the scan summarises the run again.
        f = EventFactory(e, experiment=experiment)
        await store_events(dsn, [f.metrics(packed_series("big", [-1.0], steps=[1],
                                                         times_us=[t0 + 99]))])
        after = await _list_answers(http, api, experiment, [a, b, c, d, e])
        assert after["columns"][e]["big"] == {  # type: ignore[index]
            "kind": "series", "count": 2, "last": -1.0, "min": -1.0, "max": 0.5}
        assert after["big asc"][:2] == [e, c]  # type: ignore[index]
        assert after["big>0.3"] == []
        await store_events(dsn, [f.lifecycle("Completed")])
        assert await tiler.summarize_due() == 1
        assert await _list_answers(http, api, experiment, [a, b, c, d, e]) == after


async def test_retention_forgets_stored_summaries(
    http: aiohttp.ClientSession, api: ReadApi, dsn: str
) -> None:
    """Dropping old metric data forgets the stored summaries (they counted its points):
    the lists then show what is left, and the next summaries are of that."""
    from ingest.worker.store import Store
    from ingest.worker.tiler import SeriesTiler

    rid = run_id("retention")
    f = EventFactory(rid, experiment="retention")
    now_us = int(time.time() * 1e6)
    old_us = now_us - 3 * 365 * 86_400 * 1_000_000
    await store_events(dsn, [
        f.lifecycle("Running"),
        f.metrics(packed_series("loss", [9.0, 8.0], steps=[0, 1], times_us=[old_us] * 2)),
        f.metrics(packed_series("loss", [0.5], steps=[2], times_us=[now_us])),
    ], tile=True)
    column = url(api, "/v1/runs", experiment="retention", metric="loss")
    before = (await get_json(http, column))["runs"][0]["metrics"]["loss"]
    assert before == {"kind": "series", "count": 3, "last": 0.5, "min": 0.5, "max": 9.0}
    assert (await fetch_rows(dsn, "SELECT count(*) AS n FROM "
                                  "runstream_data.metric_summary_runs"))[0]["n"] == 1
    await fetch_rows(dsn, "SELECT runstream_data.drop_metrics_older_than('1 year')")
    assert (await fetch_rows(dsn, "SELECT count(*) AS n FROM "
                                  "runstream_data.metric_summary_runs"))[0]["n"] == 0
    after = {"kind": "value", "count": 1, "last": 0.5, "min": 0.5, "max": 0.5}
    assert (await get_json(http, column))["runs"][0]["metrics"]["loss"] == after
    async with Store(dsn=dsn) as store:
        assert await SeriesTiler(store, scan_interval_s=0).summarize_due() == 1
    assert (await get_json(http, column))["runs"][0]["metrics"]["loss"] == after
