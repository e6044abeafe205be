"""The product page's example notebooks, their calls unchanged but for the import.

``logging-api.ipynb`` (Azure/MachineLearningNotebooks, how-to-use-azureml/
track-and-monitor-experiments/logging-api) cell by cell, with ``from producer import``
instead of ``from azureml.core import`` and a ``config.json`` the test writes, against the
real stack (SDK → Kafka → worker → PostgreSQL → API). Each cell's asserted outcome is what
its output would show. ``run.register_model`` / ``Model`` as the train-on-local notebook
uses them follow.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from tests.integration.pipelines import ReadPipeline, call

pytestmark = pytest.mark.integration


def logging_api_notebook(folder: Path) -> dict[str, Any]:
    """Cells 1 to 19 of logging-api.ipynb as published (only the import changed); what the
    cells would display, for the test to check."""
    os.chdir(folder)
    shown: dict[str, Any] = {}
    f: Any  # the notebook names a file and then each file name f
    # --- cell [5]
    import numpy as np
    from tqdm import tqdm

    from producer import Experiment, Run, Workspace  # was: from azureml.core import …
    # --- cell [7]
    ws = Workspace.from_config()
    shown["workspace"] = ('Workspace name: ' + ws.name,
                          'Azure region: ' + ws.location,
                          'Subscription id: ' + ws.subscription_id,
                          'Resource group: ' + ws.resource_group)
    # --- cell [9]
    experiment = Experiment(workspace=ws, name='logging-api-test')
    # --- cell [11]
    run = experiment.start_logging()
    run_id = run.id
    scale_factor = 2
    category = 'Red'
    # --- cells [13], [15]
    shown["run"] = run._repr_html_()
    shown["experiment"] = experiment._repr_html_()
    # --- cell [17]
    run.log(name='Category', value=category)
    # --- cell [19]
    run.log(name="scale factor", value = scale_factor)
    run.log(name='Magic Number', value=42 * scale_factor)
    # --- cell [21]
    fibonacci_values = [0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89]
    scaled_values = (i * scale_factor for i in fibonacci_values)
    run.log_list(name='Fibonacci', value=scaled_values)
    for i in tqdm(range(-10, 10)):
        run.log(name='Sigmoid', value=1 / (1 + np.exp(-i)))
    # --- cell [23]
    sines: dict[str, list[Any]] = {}
    sines['angle'] = []
    sines['sine'] = []
    for i in tqdm(range(-10, 10)):
        angle = i / 2.0 * scale_factor
        run.log_row(name='Cosine Wave', angle=angle, cos=np.cos(angle))
        sines['angle'].append(angle)
        sines['sine'].append(np.sin(angle))
    run.log_table(name='Sine Wave', value=sines)
    # --- cell [25]
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    angle = np.linspace(-3, 3, 50) * scale_factor
    plt.plot(angle,np.tanh(angle), label='tanh')
    plt.legend(fontsize=12)
    plt.title('Hyperbolic Tangent', fontsize=16)
    plt.grid(True)
    run.log_image(name='Hyperbolic Tangent', plot=plt)
    plt.close("all")
    # --- cell [27]
    import random
    metricNames = [ "Accuracy", "Precision", "Recall" ]
    columnNames = [ "expected", "actual", "calculated", "inferred", "determined", "predicted", "forecast", "speculated", "assumed", "required", "intended", "deduced", "theorized", "hoped", "hypothesized" ]  # noqa: E501
    for step in range(1000):
        for metricName in metricNames:
            metricKeyValueDictionary={}
            for column in columnNames:
                metricKeyValueDictionary[column] = random.randrange(0, step + 1)
            run.log_row(
                metricName,
                "Example row for metric " + metricName,
                **metricKeyValueDictionary)
    # --- cell [29]
    directory = 'logging-api'
    if not os.path.exists(directory):
        os.mkdir(directory)
    file_name = os.path.join(directory, "myfile.txt")
    with open(file_name, "w") as f:
        f.write('This is an output file that will be uploaded.\n')
    run.upload_file(name = file_name, path_or_stream = file_name)
    # --- cell [31]
    run.complete()
    # --- cell [34]
    fetched_run = Run(experiment, run_id)
    shown["fetched_run"] = fetched_run._repr_html_()
    # --- cell [36]
    shown["metrics"] = fetched_run.get_metrics()
    # --- cell [38]
    shown["scale factor"] = fetched_run.get_metrics(name = "scale factor")
    # --- cell [40]
    shown["files"] = fetched_run.get_file_names()
    # --- cell [42]
    os.makedirs('files', exist_ok=True)
    printed = []
    for f in run.get_file_names():
        dest = os.path.join('files', f.split('/')[-1])
        printed.append('Downloading file {} to {}...'.format(f, dest))  # noqa: UP032
        fetched_run.download_file(f, dest)
    shown["downloads"] = printed
    shown["run_id"] = run_id
    shown["fetched"] = fetched_run
    return shown


async def test_logging_api_notebook(read_pipeline: ReadPipeline, tmp_path: Path) -> None:
    folder = tmp_path / "notebook"
    read_pipeline.write_config(folder)
    cwd = os.getcwd()
    try:
        shown = await call(logging_api_notebook, folder)
    finally:
        os.chdir(cwd)
    run_id = shown["run_id"]
    assert shown["workspace"] == ("Workspace name: default", "Azure region: local",
                                  "Subscription id: 00000000-0000-0000-0000-000000000000",
                                  "Resource group: rg")
    assert "<td>logging-api-test</td>" in shown["run"]
    assert "<td>Running</td>" in shown["run"]
    assert "<td>Completed</td>" in shown["fetched_run"]
    assert "<td>logging-api-test</td><td>default</td>" in shown["experiment"]
    metrics = shown["metrics"]
    assert metrics["Category"] == "Red"
    assert metrics["scale factor"] == 2
    assert metrics["Magic Number"] == 84
    assert metrics["Fibonacci"] == [0, 2, 2, 4, 6, 10, 16, 26, 42, 68, 110, 178]
    assert len(metrics["Sigmoid"]) == 20
    assert metrics["Sigmoid"][0] == pytest.approx(4.5397868702434395e-05)
    assert metrics["Cosine Wave"]["angle"] == [float(i) for i in range(-10, 10)]
    assert len(metrics["Cosine Wave"]["cos"]) == 20
    assert metrics["Sine Wave"]["angle"] == [float(i) for i in range(-10, 10)]
    for name in ("Accuracy", "Precision", "Recall"):
        table = metrics[name]
        assert len(table) == 15
        assert all(len(values) == 1000 for values in table.values())
        assert table["expected"][0] == 0  # randrange(0, 1) at step 0
    assert shown["scale factor"] == {"scale factor": 2}
    assert sorted(shown["files"]) == ["Hyperbolic Tangent/step_0.png", "logging-api/myfile.txt"]
    assert sorted(shown["downloads"]) == [
        "Downloading file Hyperbolic Tangent/step_0.png to files/step_0.png...",
        "Downloading file logging-api/myfile.txt to files/myfile.txt...",
    ]
    downloaded = (folder / "files" / "myfile.txt").read_text()
    assert downloaded == "This is an output file that will be uploaded.\n"
    assert (folder / "files" / "step_0.png").read_bytes().startswith(b"\x89PNG")
    assert shown["fetched"].id == run_id


async def test_logging_api_notebook_tags_a_fetched_completed_run(
    read_pipeline: ReadPipeline, tmp_path: Path
) -> None:
    def cells() -> dict[str, str | int | float | bool | None]:
        from producer import Experiment, Run, Workspace

        ws = Workspace.from_config(tmp_path / "nb")
        experiment = Experiment(workspace=ws, name='logging-api-test')
        run = experiment.start_logging()
        run.complete()
        # --- cell [44]
        fetched_run = Run(experiment, run.id)
        fetched_run.tag("My Favorite Run")
        fetched_run.tag("Competition Rank", 1)
        return fetched_run.get_tags()

    read_pipeline.write_config(tmp_path / "nb")
    tags = await call(cells)
    # Azure ML keeps "1"; Runstream keeps a tag's type (README: "Hyper-parameters").
    assert tags == {"My Favorite Run": None, "Competition Rank": 1}


async def test_models_from_a_run_and_from_local_files(
    read_pipeline: ReadPipeline, tmp_path: Path
) -> None:
    """train-on-local's last cells: ``run.register_model(model_name=..., model_path=
    './outputs/ridge_0.40.pkl')``, then ``Model`` to find, list and download versions."""
    read_pipeline.write_config(tmp_path / "ws")

    def cells() -> dict[str, Any]:
        from producer import Experiment, Model, Workspace

        ws = Workspace.from_config(tmp_path / "ws")
        exp = Experiment(workspace=ws, name="train-on-local")
        out = tmp_path / "job" / "outputs"
        out.mkdir(parents=True)
        for alpha in ("0.35", "0.40"):
            (out / f"ridge_{alpha}.pkl").write_bytes(f"model {alpha}".encode() * 1000)
        run = exp.start_logging(outputs_dir=out)
        run.complete()
        model = run.register_model(model_name='best_ridge_model',
                                   model_path='./outputs/ridge_0.40.pkl')
        again = run.register_model(model_name='best_ridge_model',
                                   model_path='outputs/ridge_0.35.pkl', tags={"alpha": "0.35"})
        local = tmp_path / "local-model"
        local.mkdir()
        (local / "weights.bin").write_bytes(b"\x00\x01" * 5000)
        (local / "config.json").write_text('{"layers": 3}')
        folder_model = Model.register(ws, model_path=str(local), model_name="local-net",
                                      description="a folder")
        fetched = Model(ws, "best_ridge_model")
        first = Model(ws, "best_ridge_model", version=1)
        listed = [(m.name, m.version) for m in Model.list(ws, name="best_ridge_model")]
        tagged = [m.version for m in Model.list(ws, tags={"alpha": "0.35"})]
        path = Path(first.download(tmp_path / "download"))
        folder = Path(folder_model.download(tmp_path / "download"))
        with pytest.raises(FileExistsError):
            first.download(tmp_path / "download")
        return {"model": model, "again": again, "fetched": fetched, "listed": listed,
                "tagged": tagged, "path": path, "folder": folder, "run_id": run.id,
                "printed": "Registered model:\n --> Name: {}\n --> Version: {}".format(  # noqa: UP032
                    model.name, model.version)}

    shown = await call(cells)
    assert shown["printed"] == "Registered model:\n --> Name: best_ridge_model\n --> Version: 1"
    assert (shown["model"].version, shown["again"].version, shown["fetched"].version) == (1, 2, 2)
    assert shown["model"].run_id == shown["run_id"]
    assert shown["model"].path == "outputs/ridge_0.40.pkl"
    assert shown["listed"] == [("best_ridge_model", 2), ("best_ridge_model", 1)]
    assert shown["tagged"] == [2]
    assert shown["path"].name == "ridge_0.40.pkl"
    assert shown["path"].read_bytes() == b"model 0.40" * 1000
    folder = shown["folder"]
    assert folder.name == "local-model"
    assert (folder / "weights.bin").read_bytes() == b"\x00\x01" * 5000
    digest = hashlib.sha256((folder / "config.json").read_bytes()).hexdigest()
    assert digest == hashlib.sha256(b'{"layers": 3}').hexdigest()
    assert "<th>Name</th><th>Version</th>" in shown["model"]._repr_html_()
