"""``Experiment``: a named group of runs in a workspace; ``start_logging`` opens one."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ._run import Run, new_run_id, open_run
from ._validate import check_experiment_name, check_name
from ._workspace import Workspace


class Experiment:
    def __init__(self, workspace: Workspace, name: str) -> None:
        if not isinstance(workspace, Workspace):
            raise TypeError(f"workspace must be a Workspace, not {type(workspace).__name__}")
        self.workspace = workspace
        self.name = check_experiment_name(name)

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r}, workspace={self.workspace.name!r})"

    def start_logging(
        self,
        *,
        display_name: str | None = None,
        compute_target: str | None = "local",
        capture_output: bool = False,
        outputs_dir: str | os.PathLike[str] | None = "outputs",
        properties: Mapping[str, str] | None = None,
    ) -> Run:
        """Start an interactive run (NotStarted → Running) and return its handle.

        ``outputs_dir`` (relative to the current directory now) is uploaded as
        ``outputs/...`` artifacts when the run completes; None disables that.
        ``capture_output`` also records stdout/stderr lines until the run ends.
        """
        if display_name is not None:
            check_name(display_name, "display_name")
        if compute_target is not None:
            check_name(compute_target, "compute_target")
        props = dict(properties or {})
        for key, value in props.items():
            check_name(key, "property name")
            if not isinstance(value, str):
                raise TypeError(f"property {key!r} must be a str, not {type(value).__name__}")
        return open_run(
            self,
            new_run_id(self.name),
            parent=None,
            rank=0,
            world_size=1,
            display_name=display_name,
            compute_target=compute_target,
            properties=props,
            outputs_dir=Path(outputs_dir).absolute() if outputs_dir is not None else None,
            statuses=("NotStarted", "Running"),
            capture_output=capture_output,
        )
