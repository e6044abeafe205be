"""Notebook widgets (``pip install 'runstream[notebook]'``), as ``azureml.widgets``:

    from producer.widgets import RunDetails
    RunDetails(run).show()

``RunDetails`` is an anywidget (JupyterLab, Notebook 7, VS Code, Colab; no lab extension):
the run's status and times, its metrics (series charted, single values in a table), the
end of its log, its child runs and a link to its studio page, kept current from the run's
event stream until the run ends. ``import producer`` never imports this package or
anywidget.
"""

try:
    import anywidget  # noqa: F401 - only to fail early with the install line
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "producer.widgets needs anywidget, which the SDK alone does not install: "
        "pip install 'runstream[notebook]'"
    ) from exc

from ._run_details import RunDetails

__all__ = ["RunDetails"]
