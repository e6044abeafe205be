"""``config.json``: a workspace described in a file, found the way Azure ML finds it.

``Workspace.from_config(path=None)`` looks for the file like azureml-core 1.x: ``path``
itself when it is a file; else, for each folder prefix ``.azureml/``, ``aml_config/`` and
none, and each name ``config.json`` then ``project.json``, in ``path`` (default: the
current folder) and every folder above it up to the root — so a ``.azureml/config.json``
anywhere above wins over a plain ``config.json`` here.

The file is one JSON object. Runstream's keys (each optional; missing ones come from the
``RUNSTREAM_*`` environment like ``Workspace.from_env``)::

    {"workspace_name": "vision",            # or "name"
     "api_url": "http://127.0.0.1:8470",
     "kafka_bootstrap": "127.0.0.1:9092",
     "topic": "runstream.events",
     "home": "~/.runstream",
     "token": "…"}                           # the API token (never logged)

Azure's own keys are kept as the workspace's ``subscription_id``, ``resource_group`` and
``location`` attributes (Runstream does not use them), so a notebook that prints them
still runs; a downloaded Azure ``config.json`` therefore works as is, pointing at the
local stack.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ._errors import ConfigError

__all__ = ["find_config", "read_config"]

_PREFIXES = (".azureml", "aml_config", "")
_NAMES = ("config.json", "project.json")
#: Keys a Runstream config may hold, with the type each must have.
KEYS: dict[str, type] = {
    "workspace_name": str, "name": str, "api_url": str, "kafka_bootstrap": str, "topic": str,
    "home": str, "token": str, "subscription_id": str, "resource_group": str, "location": str,
}


def find_config(path: str | os.PathLike[str] | None = None, file_name: str | None = None) -> Path:
    """The config file for ``path`` (see the module docstring); ``ConfigError`` if none."""
    start = Path(path if path is not None else ".").expanduser().absolute()
    if start.is_file():
        return start
    names = (file_name,) if file_name else _NAMES
    for prefix in _PREFIXES:
        for name in names:
            for folder in (start, *start.parents):
                candidate = folder / prefix / name if prefix else folder / name
                if candidate.is_file():
                    return candidate
    raise ConfigError(
        "config.json",
        f"not found in {str(start)!r} or its parent folders (nor in their .azureml/ "
        'folders); write one such as {"workspace_name": "default", "api_url": '
        '"http://127.0.0.1:8470"}, pass its path, or use Workspace.from_env()',
    )


def read_config(file: Path) -> dict[str, Any]:
    """The file's settings, checked: an object of the known keys with string values."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(str(file), f"is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(str(file), "must hold a JSON object")
    settings: dict[str, Any] = {}
    for key, value in data.items():
        if key not in KEYS:
            continue  # Azure's files carry more (e.g. "Id", "Scope"); they mean nothing here
        if value is not None and not isinstance(value, KEYS[key]):
            raise ConfigError(f"{file}: {key}", f"must be a string, not {type(value).__name__}")
        settings[key] = value
    return settings
