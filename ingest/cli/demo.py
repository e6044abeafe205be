"""``runstream demo``: the product page's own example, end to end on the local stack.

Sweeps Ridge regression's ``alpha`` over scikit-learn's bundled diabetes data: one parent
run, one child run per alpha logging ``alpha`` and ``mse`` and uploading its model, a
``log_row`` table "mse vs alpha" and a plot on the parent, tags for the best alpha. Then
it waits until the ingest worker has stored it all and prints what landed and where to
look. scikit-learn and matplotlib come with the ``demo`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import pickle
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from ingest.settings import Settings
from producer import Experiment, Run, Workspace

__all__ = ["DEFAULT_ALPHAS", "DemoResult", "run_demo"]

DEFAULT_ALPHAS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)
EXPERIMENT = "diabetes"

SQL_RUNS = """
SELECT run_id, parent_run_id, display_name, status
FROM runstream.runs WHERE run_id = $1 OR parent_run_id = $1
"""
SQL_POINTS = "SELECT count(*) FROM runstream.metric_points WHERE run_id = ANY($1::text[])"


@dataclass(frozen=True)
class DemoResult:
    parent_run_id: str
    child_run_ids: tuple[str, ...]
    best_alpha: float
    best_mse: float
    stored_runs: int
    stored_points: int
    statuses: dict[str, str]


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    """A scratch current directory, so ./outputs capture never picks up the user's files."""
    before = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="runstream-demo-") as tmp:
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(before)


def _load_data() -> tuple[Any, Any, Any, Any]:
    try:
        from sklearn.datasets import load_diabetes
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SystemExit(
            "runstream demo needs scikit-learn and matplotlib: pip install 'runstream[demo]'"
        ) from exc
    x, y = load_diabetes(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0)
    return x_train, x_test, y_train, y_test


def _figure(alphas: Sequence[float], mses: Sequence[float]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    ax.plot(alphas, mses, marker="o")
    ax.set_xlabel("alpha")
    ax.set_ylabel("mse")
    ax.set_title("Ridge on diabetes: mse vs alpha")
    fig.tight_layout()
    return fig


def _train(child: Run, alpha: float, data: tuple[Any, Any, Any, Any]) -> float:
    from sklearn.linear_model import Ridge
    from sklearn.metrics import mean_squared_error

    x_train, x_test, y_train, y_test = data
    model = Ridge(alpha=alpha).fit(x_train, y_train)
    mse = float(mean_squared_error(y_test, model.predict(x_test)))
    child.log("alpha", alpha)
    child.log("mse", mse)
    child.upload_file("outputs/model.pkl", io.BytesIO(pickle.dumps(model)))
    return mse


def sweep(workspace: Workspace, alphas: Sequence[float]) -> tuple[Run, list[Run], float, float]:
    data = _load_data()
    experiment = Experiment(workspace, EXPERIMENT)
    children: list[Run] = []
    mses: list[float] = []
    with experiment.start_logging(display_name="ridge alpha sweep", outputs_dir=None) as parent:
        parent.tag("model", "Ridge")
        parent.tag("dataset", "sklearn diabetes")
        parent.log("train_rows", len(data[0]))
        for alpha in alphas:
            with parent.child_run(f"alpha={alpha}") as child:
                mse = _train(child, alpha, data)
            children.append(child)
            mses.append(mse)
            parent.log_row("mse vs alpha", alpha=alpha, mse=mse)
        best = min(range(len(alphas)), key=lambda i: mses[i])
        parent.log("best_mse", mses[best])
        parent.tag("best_alpha", str(alphas[best]))
        parent.log_image("mse vs alpha", plot=_figure(alphas, mses))
    return parent, children, alphas[best], mses[best]


async def _wait_stored(
    dsn: str, parent_id: str, child_ids: Sequence[str], *, timeout_s: float
) -> tuple[dict[str, str], int]:
    wanted = {parent_id, *child_ids}
    deadline = time.monotonic() + timeout_s
    conn = await asyncpg.connect(dsn)
    try:
        while True:
            rows = await conn.fetch(SQL_RUNS, parent_id)
            statuses = {r["run_id"]: r["status"] for r in rows}
            done = wanted <= statuses.keys() and all(statuses[r] == "Completed" for r in wanted)
            if done or time.monotonic() > deadline:
                points = await conn.fetchval(SQL_POINTS, sorted(wanted))
                return statuses, int(points)
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


def run_demo(
    settings: Settings, *, dsn: str, alphas: Sequence[float] = DEFAULT_ALPHAS, timeout_s: float = 60
) -> DemoResult:
    workspace = Workspace(
        kafka_bootstrap=settings.kafka_bootstrap,
        api_url=settings.api_url,
        home=settings.home,
        topic=settings.topic,
        token=settings.token.value,
        kafka_security=settings.kafka_security,
    )
    with _workdir():
        try:
            parent, children, best_alpha, best_mse = sweep(workspace, alphas)
        finally:
            workspace.close(timeout_s=timeout_s)
    child_ids = tuple(c.id for c in children)
    statuses, points = asyncio.run(_wait_stored(dsn, parent.id, child_ids, timeout_s=timeout_s))
    return DemoResult(
        parent_run_id=parent.id,
        child_run_ids=child_ids,
        best_alpha=best_alpha,
        best_mse=best_mse,
        stored_runs=len(statuses),
        stored_points=points,
        statuses=statuses,
    )
