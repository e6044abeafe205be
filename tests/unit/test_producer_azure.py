"""Azure ML SDK v1 (azureml-core) parity of the SDK's public surface.

``AZURE`` records, from azureml-core 1.60.0's source (identical in 1.61; the public
reference at learn.microsoft.com documents the same), the public parameters of each
method the README's "Coming from Azure ML SDK v1" table says Runstream supports: names,
order and defaults. Parameters starting with ``_`` and ``**kwargs`` are Azure's internals
and are left out. Runstream may add keyword-only parameters after Azure's, never change
Azure's.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from producer import (
    ConfigError,
    Experiment,
    Model,
    NotFoundError,
    ReadOnlyRunError,
    Run,
    Workspace,
)
from tests.unit.producer_fakes import (
    API,
    Answer,
    FakeApi,
    FakeWorkspace,
    of_kind,
    ok,
    run_details,
    wait_until,
)

RUN_ID = "exp_1700000000_0a1b2c3d"
EMPTY = inspect.Parameter.empty

#: (class, method) → Azure's public parameters in order, ``name`` or ``(name, default)``.
AZURE: dict[tuple[type, str], list[str | tuple[str, Any]]] = {
    (Workspace, "from_config"): [("path", None), ("auth", None)],
    (Experiment, "__init__"): ["workspace", "name"],
    (Experiment, "list"): ["workspace", ("experiment_name", None), ("view_type", "ActiveOnly"),
                           ("tags", None)],
    (Experiment, "get_runs"): [("type", None), ("tags", None), ("properties", None),
                               ("include_children", False)],
    (Run, "__init__"): ["experiment", "run_id", ("outputs", None)],
    (Run, "list"): ["experiment", ("type", None), ("tags", None), ("properties", None),
                    ("status", None), ("include_children", False)],
    (Run, "log"): ["name", "value", ("description", ""), ("step", None)],
    (Run, "log_list"): ["name", "value", ("description", "")],
    (Run, "log_row"): ["name", ("description", None)],
    (Run, "log_table"): ["name", "value", ("description", "")],
    (Run, "log_image"): ["name", ("path", None), ("plot", None), ("description", "")],
    (Run, "tag"): ["key", ("value", None)],
    (Run, "get_tags"): [],
    (Run, "get_properties"): [],
    (Run, "get_children"): [("recursive", False), ("tags", None), ("properties", None),
                            ("type", None), ("status", None)],
    (Run, "get_metrics"): [("name", None), ("recursive", False), ("run_type", None),
                           ("populate", False)],
    (Run, "upload_file"): ["name", "path_or_stream", ("datastore_name", None)],
    (Run, "upload_files"): ["names", "paths", ("return_artifacts", False),
                            ("timeout_seconds", None), ("datastore_name", None)],
    (Run, "upload_folder"): ["name", "path", ("datastore_name", None)],
    (Run, "set_tags"): ["tags"],
    (Run, "download_file"): ["name", ("output_file_path", None)],
    (Run, "download_files"): [("prefix", None), ("output_directory", None),
                              ("output_paths", None), ("batch_size", 100),
                              ("append_prefix", True), ("timeout_seconds", None)],
    (Run, "get_file_names"): [],
    (Run, "get_details"): [],
    (Run, "get_details_with_logs"): [],
    (Run, "get_all_logs"): [("destination", None)],
    (Run, "get_status"): [],
    (Run, "get_portal_url"): [],
    (Run, "wait_for_completion"): [("show_output", False), ("wait_post_processing", False),
                                   ("raise_on_error", True)],
    (Run, "cancel"): [],
    (Run, "create_children"): [("count", None), ("tag_key", None), ("tag_values", None)],
    (Run, "get_context"): [("allow_offline", True), ("used_for_context_manager", False)],
    (Run, "register_model"): ["model_name", ("model_path", None), ("tags", None),
                              ("properties", None), ("model_framework", None),
                              ("model_framework_version", None), ("description", None),
                              ("datasets", None), ("sample_input_dataset", None),
                              ("sample_output_dataset", None), ("resource_configuration", None)],
    (Model, "__init__"): ["workspace", ("name", None), ("id", None), ("tags", None),
                          ("properties", None), ("version", None), ("run_id", None),
                          ("model_framework", None), ("expand", True)],
    (Model, "register"): ["workspace", "model_path", "model_name", ("tags", None),
                          ("properties", None), ("description", None), ("datasets", None),
                          ("model_framework", None), ("model_framework_version", None),
                          ("child_paths", None), ("sample_input_dataset", None),
                          ("sample_output_dataset", None), ("resource_configuration", None)],
    (Model, "list"): ["workspace", ("name", None), ("tags", None), ("properties", None),
                      ("run_id", None), ("latest", False), ("dataset_id", None),
                      ("expand", True), ("page_count", 255), ("model_framework", None)],
    (Model, "download"): [("target_dir", "."), ("exist_ok", False), ("exists_ok", None)],
}


CASES = sorted((cls.__name__, method, cls) for cls, method in AZURE)


@pytest.mark.parametrize(("cls", "method"), [(c, m) for _, m, c in CASES], ids=str)
def test_public_signatures_match_azureml_core(cls: type, method: str) -> None:
    params = [
        p for p in inspect.signature(getattr(cls, method)).parameters.values()
        if p.name not in ("self", "cls") and not p.name.startswith("_")
        and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]
    azure = [(a, EMPTY) if isinstance(a, str) else a for a in AZURE[cls, method]]
    ours = [(p.name, p.default) for p in params[: len(azure)]]
    assert ours == azure
    assert all(p.kind is not p.KEYWORD_ONLY for p in params[: len(azure)])
    assert all(p.kind is p.KEYWORD_ONLY for p in params[len(azure):]), "extras are keyword-only"


# ---- Workspace.from_config -------------------------------------------------------------


def write(path: Path, config: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))
    return path


def test_from_config_searches_like_azure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RUNSTREAM_API", "RUNSTREAM_WORKSPACE", "RUNSTREAM_TOKEN", "RUNSTREAM_KAFKA"):
        monkeypatch.delenv(var, raising=False)
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    write(deep / "config.json", {"workspace_name": "here"})
    write(tmp_path / ".azureml" / "config.json", {
        "workspace_name": "above", "api_url": "http://127.0.0.1:9", "subscription_id": "sub",
        "resource_group": "rg", "location": "westeurope", "Id": None,
    })
    ws = Workspace.from_config(deep)
    # a .azureml/config.json anywhere above wins over a plain config.json here
    assert (ws.name, ws.api_url) == ("above", "http://127.0.0.1:9")
    assert (ws.subscription_id, ws.resource_group, ws.location) == ("sub", "rg", "westeurope")
    assert Workspace.from_config(deep / "config.json").name == "here"  # a file is used as is
    monkeypatch.chdir(deep)
    assert Workspace.from_config().name == "above"
    monkeypatch.setenv("RUNSTREAM_KAFKA", "broker:9093")
    assert Workspace.from_config().kafka_bootstrap == "broker:9093"  # the rest: environment


def test_from_config_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config\.json: not found in .* or its parent"):
        Workspace.from_config(tmp_path / "empty", _file_name="no-such-name.json")
    bad = write(tmp_path / "c" / "config.json", {"api_url": 8470})
    with pytest.raises(ConfigError, match="api_url: must be a string"):
        Workspace.from_config(bad)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not readable JSON"):
        Workspace.from_config(tmp_path / "d")


# ---- logging calls as the notebook writes them ----------------------------------------


def test_logging_calls_take_azure_arguments(make_ws: Callable[..., FakeWorkspace]) -> None:
    ws = make_ws(FakeApi({}))
    run = Experiment(ws, "exp").start_logging(outputs_dir=None)
    run.log(name="Category", value="Red")
    run.log("mse", 3.2, "mean squared error", step=4)
    run.log_list(name="Fibonacci", value=(i * 2 for i in (0, 1, 1, 2, 3)))
    run.log_row("Accuracy", "Example row for metric Accuracy", expected=1, actual=2)
    run.log_row(name="Cosine Wave", angle=0.5, cos=0.87)
    run.log_table(name="Sine Wave", value={"angle": [0.0, 0.5], "sine": [0.0, 0.48]})
    run.tag("Competition Rank", 1)
    with pytest.raises(TypeError, match=r"a step is given by keyword: run\.log\(name, value, step"):
        run.log("loss", 0.5, 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="description must be a str"):
        run.log_list("l", [1], 5)  # type: ignore[arg-type]
    run.complete()
    run.flush(10.0)
    kinds = {
        (e["payload"][0].rsplit(".", 1)[-1], e["payload"][1].get("name"))
        for e in ws.kafka.events()
    }
    assert {("ListValue", "Fibonacci"), ("Row", "Accuracy"), ("Row", "Cosine Wave"),
            ("Table", "Sine Wave")} <= kinds
    (fib,) = [e for e in ws.kafka.events() if e["payload"][1].get("name") == "Fibonacci"]
    assert fib["payload"][1]["values"] == [0, 2, 2, 4, 6]
    (row,) = [e for e in ws.kafka.events() if e["payload"][1].get("name") == "Accuracy"]
    assert [c["column"] for c in row["payload"][1]["cells"]] == ["expected", "actual"]
    (tag,) = [e for e in ws.kafka.events() if e["payload"][1].get("key") == "Competition Rank"]
    assert tag["payload"][1]["value"] == "1"


# ---- fetching runs -------------------------------------------------------------------------


def test_run_constructor_fetches_and_shows_like_azure(
    make_ws: Callable[..., FakeWorkspace],
) -> None:
    path = f"/v1/runs/{RUN_ID}"
    ws = make_ws(FakeApi({path: ok(run_details(RUN_ID, "Completed"))}))
    fetched = Run(Experiment(ws, "exp"), RUN_ID)
    assert (fetched.id, fetched.closed) == (RUN_ID, True)
    assert repr(fetched) == f"Run(Experiment: exp,\nId: {RUN_ID},\nType: None,\nStatus: Completed)"
    page = fetched._repr_html_()
    assert "<th>Experiment</th><th>Id</th><th>Type</th><th>Status</th><th>Details Page</th>" in page
    assert f"<td>{RUN_ID}</td>" in page
    assert "<td>Completed</td>" in page
    assert f'href="{API}/runs/{RUN_ID}"' in page  # the studio's page of the run
    with pytest.raises(ReadOnlyRunError):
        fetched.log("loss", 1.0)
    with pytest.raises(NotFoundError, match="is in experiment 'exp', not 'other'"):
        Run(Experiment(ws, "other"), RUN_ID)
    with pytest.raises(TypeError, match="no keyword arguments"):
        Run(Experiment(ws, "exp"), RUN_ID, rehydrate=True)
    experiment_page = Experiment(ws, "exp")._repr_html_()
    assert "<th>Name</th><th>Workspace</th><th>Report Page</th>" in experiment_page


def test_a_run_this_process_logged_is_found_right_after(
    make_ws: Callable[..., FakeWorkspace],
) -> None:
    fake = FakeApi({})
    ws = make_ws(fake)
    exp = Experiment(ws, "exp")
    run = exp.start_logging(outputs_dir=None)
    run.complete()
    calls = 0

    def appears_late(params: list[tuple[str, str]]) -> Answer:
        nonlocal calls
        calls += 1
        if calls < 4:  # not committed yet
            return 404, {"error": {"status": 404, "message": f"no run {run.id!r}"}}
        # then its events: the read asks about its producer until all are stored
        asked = [v for k, v in params if k == "producer"]
        assert asked == [run.producer_id]
        stored = {"events": 2 * (calls - 4), "max_seq": 99}
        return 200, run_details(run.id, "Completed", producers={run.producer_id: stored})

    fake.routes[f"/v1/runs/{run.id}"] = appears_late
    run.flush()
    sent = run._stream.next_seq  # NotStarted, Running, Finalizing, Completed
    assert sent == 4
    assert Run(exp, run.id).id == run.id
    assert calls == 4 + (sent + 1) // 2
    # all seen stored: later reads neither wait nor ask again
    fake.routes[f"/v1/runs/{run.id}"] = lambda params: (
        200, run_details(run.id, "Completed", asked=params))
    assert Run(exp, run.id).get_details()["asked"] == []
    fake.routes[f"/v1/runs/{RUN_ID}"] = lambda params: (404, {"error": {"message": "no"}})
    with pytest.raises(NotFoundError):  # somebody else's unknown run: no waiting
        Run(exp, RUN_ID)


def test_children_recursive_tags_and_metrics_by_run(make_ws: Callable[..., FakeWorkspace]) -> None:
    tree = {RUN_ID: ["c1", "c2"], "c1": ["g1"], "c2": [], "g1": []}

    def runs(params: list[tuple[str, str]]) -> Answer:
        query = dict(params)
        children = tree[query["parent_run_id"]]
        if query.get("tag") == "best":
            children = [c for c in children if c == "c2"]
        return 200, {"runs": [run_details(c, "Completed", parent_run_id=query["parent_run_id"])
                              for c in children], "next_cursor": None}

    def metrics(run_id: str) -> Callable[[list[tuple[str, str]]], Answer]:
        values = {RUN_ID: {"A": 1}, "c1": {}, "c2": {"A": 2}, "g1": {"A": 3}}[run_id]
        return ok({"metrics": values})

    routes = {"/v1/runs": runs, f"/v1/runs/{RUN_ID}": ok(run_details(RUN_ID, "Completed"))}
    routes.update({f"/v1/runs/{r}/metrics": metrics(r) for r in tree})
    ws = make_ws(FakeApi(routes))
    run = ws.get_run(RUN_ID)
    assert [c.id for c in run.get_children()] == ["c1", "c2"]
    assert [c.id for c in run.get_children(recursive=True)] == ["c1", "c2", "g1"]
    assert [c.id for c in run.get_children(tags="best")] == ["c2"]
    assert run.get_metrics() == {"A": 1}
    # Azure's shape: keyed by run id, runs without metrics left out, the run itself last
    assert run.get_metrics(recursive=True) == {"c2": {"A": 2}, "g1": {"A": 3}, RUN_ID: {"A": 1}}
    with pytest.raises(ValueError, match="no type"):
        run.get_children(type="azureml.scriptrun")


def test_create_children_by_count_and_by_tag_values(make_ws: Callable[..., FakeWorkspace]) -> None:
    ws = make_ws(FakeApi({}))
    parent = Experiment(ws, "exp").start_logging(outputs_dir=None)
    assert len(parent.create_children(count=3)) == 3
    tagged = parent.create_children(tag_key="fold", tag_values=["a", "b"])
    for child in tagged:
        assert child.parent is parent
        child.complete()
    parent.complete()
    parent.flush(10.0)
    tags = [e["payload"][1] for e in ws.kafka.events() if "key" in e["payload"][1]]
    assert tags == [{"key": "fold", "value": "a", "target": "tag", "value_type": "str"},
                    {"key": "fold", "value": "b", "target": "tag", "value_type": "str"}]
    with pytest.raises(ValueError, match="count= or tag_key="):
        parent.create_children()


def test_uploads_of_several_files_and_folders_and_several_tags(
    make_ws: Callable[..., FakeWorkspace], tmp_path: Path
) -> None:
    folder = tmp_path / "ckpt"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.bin").write_bytes(b"a")
    (folder / "sub" / "b.txt").write_text("b")
    ws = make_ws(FakeApi({}))
    run = Experiment(ws, "exp").start_logging(outputs_dir=None)
    run.upload_files(["x/a.bin", "x/b.txt"], [folder / "a.bin", folder / "sub" / "b.txt"])
    run.upload_folder("checkpoints", folder)
    run.set_tags({"lr": 0.1, "best": None})
    run.set_tags(["baseline"])
    with pytest.raises(ValueError, match="2 names for 1 paths"):
        run.upload_files(["a", "b"], [folder / "a.bin"])
    with pytest.raises(ValueError, match="no such file"):  # checked before any upload
        run.upload_files(["ok.bin", "gone.bin"], [folder / "a.bin", folder / "gone.bin"])
    with pytest.raises(ValueError, match="datastore_name"):
        run.upload_file("a", folder / "a.bin", datastore_name="workspaceblobstore")
    run.complete()  # the blobs stay staged (this API has no blob route): wait for the events
    wait_until(lambda: any(e.get("status") == "Completed" for e in of_kind(ws.kafka.events(),
                                                                            "Lifecycle")))
    names = [e["payload"][1]["name"] for e in ws.kafka.events() if e["payload"][0] == "Artifact"]
    assert names == ["x/a.bin", "x/b.txt", "checkpoints/a.bin", "checkpoints/sub/b.txt"]
    tags = [e["payload"][1] for e in ws.kafka.events() if e["payload"][0] == "Tag"]
    assert tags == [{"key": "lr", "value": "0.1", "target": "tag", "value_type": "float"},
                    {"key": "best", "value": None, "target": "tag", "value_type": "str"},
                    {"key": "baseline", "value": None, "target": "tag", "value_type": "str"}]


def test_metrics_of_one_row_are_bare_as_in_azure(make_ws: Callable[..., FakeWorkspace]) -> None:
    stored = {"one row": {"x": [1], "y": [0.5]}, "rows": {"x": [1, 2]}, "one value": [5],
              "values": [1, 2], "logged once": 3.5}
    routes = {f"/v1/runs/{RUN_ID}": ok(run_details(RUN_ID, "Completed")),
              f"/v1/runs/{RUN_ID}/metrics": ok({"metrics": stored})}
    run = make_ws(FakeApi(routes)).get_run(RUN_ID)
    assert run.get_metrics() == {"one row": {"x": 1, "y": 0.5}, "rows": {"x": [1, 2]},
                                 "one value": 5, "values": [1, 2], "logged once": 3.5}
