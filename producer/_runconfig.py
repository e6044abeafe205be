"""Submission configuration as in Azure ML SDK v1: ``ScriptRunConfig``, ``RunConfiguration``,
``Environment``, ``CondaDependencies`` and the distributed-job and Docker configurations.

Pure data: nothing here talks to the network, starts a process or looks into the source
directory. ``ScriptRunConfig.to_submission()`` turns a configuration into the plain,
JSON-able dict an agent needs to run it (its format is documented there); it is what
``Experiment.submit`` sends.

Parity with azureml-core 1.60.0: the constructors and the public methods kept here take
Azure's parameters in Azure's order with Azure's defaults (tests/unit/test_producer_runconfig.py
records them), the objects start with Azure's defaults (``Environment("x").docker.base_image``,
``environment_variables == {"EXAMPLE_ENV_VAR": "EXAMPLE_VALUE"}``, ``CondaDependencies()``
with ``python=3.8.13`` and ``azureml-defaults``), and, like Azure's
``_AbstractRunConfigElement``, setting an attribute a configuration object does not have
raises ``AttributeError`` so a typo fails loudly instead of being ignored.

Where Runstream differs, and why:

* Mistakes raise ``ValueError``/``TypeError`` when the object is made, not at submission or
  in the service: exactly one of ``script`` and ``command`` (Azure's rule, checked by its
  service), ``arguments`` only with ``script``, arguments that are scalars (they become argv
  strings verbatim), a ``script`` path relative to and inside ``source_directory``. Whether
  the script file exists is checked at submission, as in Azure.
* A ``command`` list is an argv, run without a shell (Azure joins it with spaces into a
  shell command line, so quoting is lost); a ``command`` str is a shell command line.
* ``azureml-*`` pip packages (``azureml-defaults`` is in every default) are kept in
  ``CondaDependencies`` as given but never installed: ``to_submission`` leaves them out.
  ``pin_sdk_version`` has nothing to pin. ``pip_indexurl`` becomes ``--extra-index-url``
  (Azure's ``--find-links`` does not work with a PEP 503 index).
* Agents have no conda: conda packages are carried separately and an agent tries them with
  pip; ``python=`` and ``pip=`` become ``python_version`` and ``pip_version``.
* No datastores or environment registry: a non-None ``resume_from`` and
  ``Environment.get``/``register``/``list`` raise, naming what to do instead.
* Azure attributes with no meaning here (``spark``, ``databricks``, ``r``, ``history``,
  ``data_references``, ``docker.base_dockerfile`` ...) are not there, so using them fails
  loudly rather than being silently ignored. ``ScriptRunConfig`` refuses unknown
  attributes too (Azure's does not).
"""

from __future__ import annotations

import builtins
import copy
import difflib
import json
import logging
import numbers
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any, ClassVar

from ._validate import check_name, scalar

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CPU_IMAGE",
    "DEFAULT_GPU_IMAGE",
    "PYTHON_DEFAULT_VERSION",
    "SUBMISSION_SCHEMA",
    "CondaDependencies",
    "DockerConfiguration",
    "DockerSection",
    "Environment",
    "MpiConfiguration",
    "PyTorchConfiguration",
    "PythonSection",
    "RunConfiguration",
    "ScriptRunConfig",
    "TensorflowConfiguration",
]

#: Azure's default images (``azureml.core.environment``, 1.60.0; no tag is appended).
DEFAULT_CPU_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04"
DEFAULT_GPU_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.3-cudnn8-ubuntu20.04"
#: ``CondaDependencies.create``'s default Python (``CondaDependencies()`` has 3.8.13).
PYTHON_DEFAULT_VERSION = "3.9.12"
_DEFAULT_SHM_SIZE = "2g"
#: Bumped when a key of ``ScriptRunConfig.to_submission()`` changes meaning or goes away.
SUBMISSION_SCHEMA = 1

#: What ``CondaDependencies()`` holds: azureml-core's base ``conda_dependencies.yml``.
_BASE_CONDA: dict[str, Any] = {
    "name": "project_environment",
    "dependencies": ["python=3.8.13", {"pip": ["azureml-defaults"]}],
    "channels": ["anaconda", "conda-forge"],
}
_CONDA_KEYS = ("name", "channels", "dependencies", "prefix", "variables")
_VERSION = re.compile(r"(\d+)\.(\d+)(\.(\d+))?([ab](\d+))?$")
_NAME_END = re.compile(r"[\[=<>~!;@\s]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_PYTORCH_BACKENDS = ("nccl", "gloo")
_MPI_COMMUNICATORS = ("intelmpi", "openmpi", "mpi")


# ---- the attribute guard ----------------------------------------------------------------


class _ConfigElement:
    """Refuses attributes its class does not define (``__slots__`` everywhere, so no
    ``__dict__``), with a message naming the closest real one."""

    __slots__ = ()

    if not TYPE_CHECKING:  # hidden from type checkers, which then flag typos themselves

        def __setattr__(self, name: str, value: Any) -> None:
            try:
                object.__setattr__(self, name, value)
            except AttributeError:
                if isinstance(getattr(type(self), name, None), property):
                    raise  # a read-only property: Python's own message is right
                known = _public_attributes(type(self))
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"it has {', '.join(known)}"
                raise AttributeError(
                    f"{type(self).__name__} has no attribute {name!r}; {hint}"
                ) from None


def _public_attributes(cls: type) -> list[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        names.update(getattr(klass, "__slots__", ()))
        names.update(k for k, v in vars(klass).items() if isinstance(v, property))
    return sorted(n for n in names if not n.startswith("_"))


# ---- small checks ----------------------------------------------------------------------


def _type_name(value: object) -> str:
    return type(value).__name__


def _argv_item(value: object, what: str) -> str:
    """One argv string from a scalar, verbatim: str as is, numbers and bools by ``str()``,
    paths by ``os.fspath``. Lists, dicts, None and bytes are refused, not flattened."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, os.PathLike):
        path = os.fspath(value)
        if not isinstance(path, str):
            raise TypeError(f"{what} is a bytes path; pass it as a str")
        text = path
    elif isinstance(value, bool | numbers.Real):
        text = str(value)
    elif value is None or isinstance(value, bytes | bytearray | Mapping | Sequence | set):
        nested = "" if value is None or isinstance(value, bytes | bytearray) else (
            "; nested lists and dicts are not flattened: spread them into the list "
            "(['--sizes', '1', '2']) or pass one string (json.dumps(value))"
        )
        raise TypeError(
            f"{what} must be a str, int, float, bool or path (it becomes one argv string), "
            f"not {_type_name(value)}{nested}"
        )
    else:
        try:  # numpy/torch scalars
            text = str(scalar(value, what))
        except TypeError:
            raise TypeError(
                f"{what} must be a str, int, float, bool or path (it becomes one argv "
                f"string), not {_type_name(value)}"
            ) from None
    if "\x00" in text:
        raise ValueError(f"{what} {text!r} contains NUL, which no command line can carry")
    if not text.isascii() and _SURROGATE.search(text):
        raise ValueError(f"{what} {text!r} contains a lone surrogate (not valid Unicode)")
    return text


def _argv(values: object, what: str) -> list[str]:
    if not isinstance(values, list | tuple):
        hint = " (split it: shlex.split(...))" if isinstance(values, str) else ""
        raise TypeError(f"{what} must be a list of values, not {_type_name(values)}{hint}")
    return [_argv_item(v, f"{what}[{i}]") for i, v in enumerate(values)]


def _count(value: object, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be an int, not {_type_name(value)}")
    if int(value) < minimum:
        raise ValueError(f"{what} must be at least {minimum}, not {value}")
    return int(value)


def _optional_count(value: object, what: str) -> int | None:
    return None if value is None else _count(value, what)


def _flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be True or False, not {value!r}")
    return value


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {_type_name(value)}")
    if not value.strip():
        raise ValueError(f"{what} must not be empty")
    return value


def _str_list(values: object, what: str) -> builtins.list[str]:
    if not isinstance(values, list | tuple):
        raise TypeError(f"{what} must be a list of str, not {_type_name(values)}")
    for i, value in enumerate(values):
        _text(value, f"{what}[{i}]")
    return builtins.list(values)


def _variables(values: object, what: str) -> dict[str, str]:
    """Environment variables: str names without '=', scalar values as their ``str``."""
    if not isinstance(values, Mapping):
        raise TypeError(f"{what} must be a dict of name -> value, not {_type_name(values)}")
    out: dict[str, str] = {}
    for name, value in values.items():
        _text(name, f"{what} name")
        if "=" in name or "\x00" in name:
            raise ValueError(f"{what} name {name!r} must not contain '=' or NUL")
        out[name] = _argv_item(value, f"{what}[{name!r}]")
    return out


def _check_script(script: object) -> str:
    if isinstance(script, os.PathLike):
        script = os.fspath(script)
    if not isinstance(script, str):
        raise TypeError(
            f"script must be a str path relative to source_directory, not {_type_name(script)}"
        )
    if not script.strip():
        raise ValueError("script must not be empty; name a file in source_directory")
    windows = PureWindowsPath(script)
    if PurePosixPath(script).is_absolute() or windows.is_absolute() or windows.drive:
        raise ValueError(
            f"script {script!r} must be a path relative to source_directory (e.g. "
            "'train.py'), not an absolute path: the agent runs a snapshot of source_directory"
        )
    if ".." in re.split(r"[\\/]", script):
        raise ValueError(
            f"script {script!r} must stay inside source_directory (no '..'): only "
            "source_directory is sent to the agent"
        )
    if "\x00" in script:
        raise ValueError(f"script {script!r} contains NUL")
    return script


def _check_source_directory(source_directory: object) -> str:
    if isinstance(source_directory, os.PathLike):
        source_directory = os.fspath(source_directory)
    if not isinstance(source_directory, str):
        raise TypeError(
            f"source_directory must be a str or path, not {_type_name(source_directory)}"
        )
    if not source_directory:
        raise ValueError("source_directory must not be empty; use '.' for the current one")
    return source_directory


def _package_name(spec: str) -> str:
    """The distribution name of a pip or conda spec (``numpy>=1.2`` → ``numpy``; a wheel
    file or URL → the name in the file name), as azureml-core reads it."""
    spec = spec.strip()
    if spec.endswith(".whl"):
        return re.split(r"[/\\]", spec)[-1].split("-")[0]
    return _NAME_END.split(spec, maxsplit=1)[0]


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _is_azureml(spec: str) -> bool:
    name = _normalized(_package_name(spec))
    return name == "azureml" or name.startswith("azureml-")


def _version_of(spec: str) -> str | None:
    match = _VERSION.search(spec)
    return match.group() if match else None


# ---- conda environment files --------------------------------------------------------------


def _strip_comment(line: str) -> str:
    quote = None
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def _yaml_scalar(text: str, where: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            value = json.loads(text)
        except ValueError:
            raise ValueError(f"{where}: cannot read the quoted string {text}") from None
        if not isinstance(value, str):
            raise ValueError(f"{where}: cannot read the quoted string {text}")
        return value
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    if text[:1] in ("[", "{", "&", "*", "!", "|", ">", "%", "@", "`") or (
        ": " in text or text.endswith(":")
    ):
        raise ValueError(f"{where}: {text!r} is YAML this reader does not handle")
    return text


def _parse_conda_file(text: str, source: str) -> dict[str, Any]:
    """A conda environment file (``name``, ``channels``, ``dependencies`` with a nested
    ``pip`` list, ``prefix``, ``variables``), block style as ``conda env export`` writes it.
    Anything else is refused with the line, rather than misread."""
    spec: dict[str, Any] = {}
    key: str | None = None
    pip: list[str] | None = None
    pip_indent = -1
    for number, raw in enumerate(text.splitlines(), 1):
        where = f"{source} line {number}"
        line = _strip_comment(raw).rstrip()
        body = line.strip()
        if not body or body in ("---", "..."):
            continue
        if "\t" in line[: len(line) - len(line.lstrip())]:
            raise ValueError(f"{where}: YAML indentation must be spaces, not tabs")
        indent = len(line) - len(line.lstrip())
        if indent == 0 and not body.startswith("-"):
            name, colon, value = body.partition(":")
            if not colon or name.strip() not in _CONDA_KEYS:
                raise ValueError(
                    f"{where}: expected one of {', '.join(_CONDA_KEYS)} followed by ':', "
                    f"got {body!r}"
                )
            key, pip = name.strip(), None
            if value.strip():
                spec[key] = _yaml_scalar(value, where)
            else:
                spec[key] = {} if key == "variables" else []
            continue
        if key is None:
            raise ValueError(f"{where}: {body!r} belongs to no key")
        if key == "variables" and not body.startswith("-"):
            name, colon, value = body.partition(":")
            if not colon:
                raise ValueError(f"{where}: expected NAME: value under variables")
            spec[key][name.strip()] = _yaml_scalar(value, where) if value.strip() else ""
            continue
        if not (body == "-" or body.startswith("- ")) or not isinstance(spec.get(key), list):
            raise ValueError(f"{where}: expected a '- item' under {key}, got {body!r}")
        item = body[1:].strip()
        if pip is not None and indent > pip_indent:
            pip.append(_yaml_scalar(item, where))
            continue
        pip = None
        if key == "dependencies" and item.replace(" ", "") == "pip:":
            pip, pip_indent = [], indent
            spec[key].append({"pip": pip})
        elif item:
            spec[key].append(_yaml_scalar(item, where))
        else:
            raise ValueError(f"{where}: empty list item")
    return spec


def _yaml_dump_scalar(text: str) -> str:
    plain = re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.=<>~!+*,/@ -]*", text)
    if plain and not text.endswith(" ") and text.lower() not in ("null", "true", "false"):
        return text
    return json.dumps(text)


# ---- CondaDependencies --------------------------------------------------------------------


class CondaDependencies(_ConfigElement):
    """The Python packages of an environment, as a conda environment file: conda packages
    (``python=3.9.12`` among them), a nested pip list (packages and ``--options``) and
    channels.

    ``CondaDependencies()`` is azureml-core's default: ``python=3.8.13``, pip
    ``azureml-defaults``, channels ``anaconda`` and ``conda-forge``.
    ``CondaDependencies(path)`` reads a conda environment file (block style, as
    ``conda env export`` writes it).

    What an agent does with it (``to_submission``): it pip-installs the pip packages
    except ``azureml-*`` (they are Azure's SDK, meaningless here, so ``azureml-defaults``
    of the defaults costs nothing), with the pip options; conda is not available on
    agents, so the conda packages other than ``python`` and ``pip`` are tried with pip and
    the run fails if pip cannot install them.
    """

    __slots__ = ("_spec",)

    def __init__(
        self, conda_dependencies_file_path: str | os.PathLike[str] | None = None,
        _underlying_structure: Mapping[str, Any] | None = None,
    ) -> None:
        if conda_dependencies_file_path is not None:
            path = os.fspath(conda_dependencies_file_path)
            with open(path, encoding="utf-8") as file:
                spec = _parse_conda_file(file.read(), path)
        elif _underlying_structure is not None:
            spec = copy.deepcopy(dict(_underlying_structure))
        else:
            spec = copy.deepcopy(_BASE_CONDA)
        self._spec = _checked_conda_spec(spec)

    @staticmethod
    def create(
        pip_indexurl: str | None = None,
        pip_packages: Sequence[str] | None = None,
        conda_packages: Sequence[str] | None = None,
        python_version: str = PYTHON_DEFAULT_VERSION,
        pin_sdk_version: bool = True,
    ) -> CondaDependencies:
        """Azure's defaults with these packages: ``pip_packages=None`` means
        ``['azureml-defaults']`` (which agents skip), a list replaces the defaults.

        ``pip_indexurl`` adds ``--extra-index-url <url>``. ``pin_sdk_version`` is accepted
        and does nothing: Azure pins ``azureml-*`` packages to its own version, and agents
        do not install them.
        """
        cd = CondaDependencies()
        if pip_indexurl:
            cd.set_pip_option(f"--extra-index-url {_text(pip_indexurl, 'pip_indexurl')}")
        cd.set_python_version(python_version)
        if pip_packages is None:
            pip_packages = ["azureml-defaults"]
        else:
            for package in builtins.list(cd.pip_packages):
                cd.remove_pip_package(package)
        for package in _str_list(pip_packages, "pip_packages"):
            cd.add_pip_package(package)
        for package in _str_list(conda_packages or [], "conda_packages"):
            if _package_name(package) != "python":
                cd.remove_conda_package(package)  # re-added at the end, as Azure orders them
            cd.add_conda_package(package)
        return cd

    # -- reading

    @property
    def conda_channels(self) -> Iterator[str]:
        """The channels (a copy; change them with ``add_channel``/``remove_channel``)."""
        return iter(builtins.list(self._spec.get("channels", [])))

    @property
    def conda_packages(self) -> Iterator[str]:
        """The conda packages, ``python=...`` included (a copy)."""
        return iter([d for d in self._dependencies() if isinstance(d, str)])

    @property
    def pip_packages(self) -> Iterator[str]:
        """The pip packages, options left out (a copy)."""
        return iter([p for p in self._pip() or [] if not p.startswith("-")])

    @property
    def pip_options(self) -> Iterator[str]:
        """The pip options such as ``--extra-index-url <url>`` (a copy)."""
        return iter([p for p in self._pip() or [] if p.startswith("-")])

    def get_python_version(self) -> str | None:
        """The version of the ``python`` conda package (``'3.8.13'``), or None."""
        for dependency in self._dependencies():
            if isinstance(dependency, str) and _package_name(dependency) == "python":
                return _version_of(dependency)
        return None

    def serialize_to_string(self) -> str:
        """The conda environment file (YAML), as ``conda env create -f`` reads it."""
        lines: list[str] = []
        for key, value in self._spec.items():
            if isinstance(value, str):
                lines.append(f"{key}: {_yaml_dump_scalar(value)}")
                continue
            lines.append(f"{key}:")
            if isinstance(value, Mapping):
                lines += [f"  {k}: {_yaml_dump_scalar(str(v))}" for k, v in value.items()]
                continue
            for item in value:
                if isinstance(item, Mapping):
                    lines.append("- pip:")
                    lines += [f"  - {_yaml_dump_scalar(p)}" for p in item["pip"]]
                else:
                    lines.append(f"- {_yaml_dump_scalar(item)}")
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict[str, Any]:
        """The environment file as plain data (a copy)."""
        return copy.deepcopy(self._spec)

    # -- changing

    def set_python_version(self, version: str) -> None:
        """Set the ``python`` conda package to ``python=<version>``."""
        spec = f"python={_text(version, 'version')}"
        dependencies = self._dependencies()
        for i, dependency in enumerate(dependencies):
            if isinstance(dependency, str) and _package_name(dependency) == "python":
                dependencies[i] = spec
                return
        dependencies.append(spec)

    def add_channel(self, channel: str) -> None:
        channels = self._spec.setdefault("channels", [])
        if _text(channel, "channel") not in channels:
            channels.append(channel)

    def remove_channel(self, channel: str) -> None:
        channels = self._spec.get("channels", [])
        if channel in channels:
            channels.remove(channel)

    def add_conda_package(self, conda_package: str) -> None:
        """Add a conda package; ``python=<version>`` sets the Python version instead."""
        _text(conda_package, "conda_package")
        if _package_name(conda_package) == "python":
            version = _version_of(conda_package)
            if version is None:
                raise ValueError(f"conda package {conda_package!r} names no Python version")
            self.set_python_version(version)
        elif conda_package not in self._dependencies():
            self._dependencies().append(conda_package)

    def remove_conda_package(self, conda_package: str) -> None:
        if _package_name(conda_package) == "python":
            raise ValueError("python must not be removed from conda dependencies")
        dependencies = self._dependencies()
        if conda_package in dependencies:
            dependencies.remove(conda_package)

    def add_pip_package(self, pip_package: str) -> None:
        """Add a pip package, replacing an earlier entry of the same package."""
        if _text(pip_package, "pip_package").startswith("-"):
            raise ValueError(
                f"Invalid package name {pip_package}: pip options go through set_pip_option"
            )
        self.remove_pip_package(pip_package)
        pip = self._pip()
        if pip is None:
            self._dependencies().append({"pip": [pip_package]})
        else:
            pip.append(pip_package)

    def remove_pip_package(self, pip_package: str) -> None:
        """Remove every entry of this package (any version)."""
        if _text(pip_package, "pip_package").startswith("-"):
            raise ValueError(f"Invalid package name {pip_package}")
        name = _normalized(_package_name(pip_package))
        pip = self._pip()
        if pip is not None:
            pip[:] = [
                p for p in pip
                if p.startswith("-") or _normalized(_package_name(p)) != name
            ]

    def set_pip_option(self, pip_option: str) -> None:
        """Add a pip option (``--extra-index-url <url>``), replacing one of the same flag."""
        if not _text(pip_option, "pip_option").startswith("-"):
            raise ValueError(f"Invalid pip option {pip_option}: options start with '-'")
        pip = self._pip()
        if pip is None:
            self._dependencies().append({"pip": [pip_option]})
            return
        flag = pip_option.split()[0]
        for i, item in enumerate(pip):
            if item.startswith("-") and item.split()[0] == flag:
                pip[i] = pip_option
                return
        pip.append(pip_option)

    def remove_pip_option(self, pip_option: str) -> None:
        if not _text(pip_option, "pip_option").startswith("-"):
            raise ValueError(f"Invalid pip option {pip_option}")
        flag = pip_option.split()[0]
        pip = self._pip()
        if pip is not None:
            pip[:] = [p for p in pip if not (p.startswith("-") and p.split()[0] == flag)]

    def set_pip_index_url(self, index_url: str) -> None:
        """Azure's alias of ``set_pip_option``: pass the whole option,
        ``'--index-url https://...'``."""
        self.set_pip_option(index_url)

    def set_pip_requirements(self, pip_requirements: Sequence[str]) -> None:
        """Replace the whole pip list (packages and options)."""
        requirements = _str_list(pip_requirements, "pip_requirements")
        pip = self._pip()
        if pip is None:
            self._dependencies().append({"pip": requirements})
        else:
            pip[:] = requirements

    # -- inside

    def _dependencies(self) -> list[Any]:
        dependencies: list[Any] = self._spec.setdefault("dependencies", [])
        return dependencies

    def _pip(self) -> list[str] | None:
        for dependency in self._dependencies():
            if isinstance(dependency, dict):
                pip: list[str] = dependency["pip"]
                return pip
        return None


def _checked_conda_spec(spec: dict[str, Any]) -> dict[str, Any]:
    for key in spec:
        if key not in _CONDA_KEYS:
            raise ValueError(f"Environment error: unknown {key} key in environment specification")
    for key in ("name", "prefix"):
        if key in spec:
            _text(spec[key], f"conda {key}")
    if "channels" in spec:
        spec["channels"] = _str_list(spec["channels"], "conda channels")
    if "variables" in spec:
        spec["variables"] = _variables(spec["variables"], "conda variables")
    dependencies = spec.get("dependencies", [])
    if not isinstance(dependencies, list):
        raise TypeError(f"conda dependencies must be a list, not {_type_name(dependencies)}")
    pip_lists = 0
    for i, dependency in enumerate(dependencies):
        if isinstance(dependency, Mapping):
            if set(dependency) != {"pip"}:
                raise ValueError(
                    f"conda dependencies[{i}] must be a package or {{'pip': [...]}}, "
                    f"not {dict(dependency)!r}"
                )
            dependencies[i] = {"pip": _str_list(dependency["pip"], "pip dependencies")}
            pip_lists += 1
        else:
            _text(dependency, f"conda dependencies[{i}]")
    if pip_lists > 1:
        raise ValueError("conda dependencies have more than one pip list")
    return spec


# ---- Environment ---------------------------------------------------------------------------


class PythonSection(_ConfigElement):
    """``Environment.python``: which interpreter runs the script, and whether the agent
    builds its packages.

    ``user_managed_dependencies=False`` (default): the agent makes (and caches) a
    virtualenv with ``conda_dependencies``' pip packages. ``True``: it runs
    ``interpreter_path`` as it is; the default ``"python"`` means the agent's own
    interpreter.
    """

    __slots__ = ("conda_dependencies", "interpreter_path", "user_managed_dependencies")

    def __init__(self, **kwargs: Any) -> None:
        skip_defaults = _skip_defaults("PythonSection", kwargs)
        self.interpreter_path = "python"
        self.user_managed_dependencies = False
        self.conda_dependencies: CondaDependencies | None = (
            None if skip_defaults else CondaDependencies()
        )


class DockerSection(_ConfigElement):
    """``Environment.docker``: ``base_image`` and the deprecated ``enabled``,
    ``shm_size``, ``shared_volumes``, ``arguments`` (their setters log Azure's deprecation
    warning; ``DockerConfiguration`` is the current way). Whether an agent can run Docker
    is the agent's business; ``to_submission`` says what was asked."""

    __slots__ = ("_arguments", "_enabled", "_shared_volumes", "_shm_size", "base_image")

    def __init__(self, **kwargs: Any) -> None:
        skip_defaults = _skip_defaults("DockerSection", kwargs)
        self._enabled = False
        self._shm_size: str | None = None if skip_defaults else _DEFAULT_SHM_SIZE
        self._shared_volumes = True
        self._arguments: list[str] = []
        self.base_image: str | None = None if skip_defaults else DEFAULT_CPU_IMAGE

    @property
    def enabled(self) -> bool:
        """DEPRECATED: use ``DockerConfiguration(use_docker=True)``."""
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        logger.warning(
            "'enabled' is deprecated. Please use the azureml.core.runconfig.DockerConfiguration "
            "object with the 'use_docker' param instead."
        )
        self._enabled = value

    @property
    def shm_size(self) -> str | None:
        """DEPRECATED: use ``DockerConfiguration(shm_size=...)``."""
        return self._shm_size

    @shm_size.setter
    def shm_size(self, value: str | None) -> None:
        logger.warning(
            "'shm_size' is deprecated. Please use the azureml.core.runconfig.DockerConfiguration "
            "object instead."
        )
        self._shm_size = value

    @property
    def shared_volumes(self) -> bool:
        """DEPRECATED: use ``DockerConfiguration(shared_volumes=...)``."""
        return self._shared_volumes

    @shared_volumes.setter
    def shared_volumes(self, value: bool) -> None:
        logger.warning(
            "'shared_volumes' is deprecated. Please use the "
            "azureml.core.runconfig.DockerConfiguration object instead."
        )
        self._shared_volumes = value

    @property
    def arguments(self) -> list[str]:
        """DEPRECATED: use ``DockerConfiguration(arguments=...)``."""
        return self._arguments

    @arguments.setter
    def arguments(self, value: list[str]) -> None:
        logger.warning(
            "'arguments' is deprecated. Please use the azureml.core.runconfig.DockerConfiguration "
            "object instead."
        )
        self._arguments = value


def _skip_defaults(owner: str, kwargs: dict[str, Any]) -> bool:
    skip = kwargs.pop("_skip_defaults", False)
    if kwargs:
        raise TypeError(f"{owner}() got unexpected keyword arguments {sorted(kwargs)}")
    return bool(skip)


_NO_REGISTRY = (
    "Runstream has no environment registry: build the Environment in code "
    "(Environment(name), Environment.from_pip_requirements(name, 'requirements.txt'), "
    "Environment.from_conda_specification(name, 'environment.yml')) and pass it to "
    "ScriptRunConfig(environment=...)"
)


class Environment(_ConfigElement):
    """Where and with what packages a script runs: ``python`` (a ``PythonSection``),
    ``docker`` (a ``DockerSection``), ``environment_variables``, ``name`` and ``version``.

    ``Environment("name")`` starts with Azure's defaults: an agent-built virtualenv with
    ``CondaDependencies()``'s packages, Docker off, ``{"EXAMPLE_ENV_VAR": "EXAMPLE_VALUE"}``.
    ``Environment.get``, ``register`` and ``list`` raise ``NotImplementedError``: there is
    no environment registry; environments live in code.
    """

    __slots__ = ("_environment_variables", "docker", "name", "python", "version")

    def __init__(self, name: str | None, **kwargs: Any) -> None:
        skip_defaults = _skip_defaults("Environment", kwargs)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"Environment name expected str, {type(name)} found")
        self.name = name
        self.version: str | None = None
        self.python = PythonSection(_skip_defaults=skip_defaults)
        self.docker = DockerSection(_skip_defaults=skip_defaults)
        self._environment_variables: dict[str, Any] = (
            {} if skip_defaults else {"EXAMPLE_ENV_VAR": "EXAMPLE_VALUE"}
        )

    @property
    def environment_variables(self) -> dict[str, Any]:
        """Variables set for the run (deprecated in Azure in favour of
        ``RunConfiguration.environment_variables``, which win over these)."""
        return self._environment_variables

    @environment_variables.setter
    def environment_variables(self, value: dict[str, Any]) -> None:
        logger.warning(
            "Property environment_variables is deprecated. "
            "Use RunConfiguration.environment_variables to set runtime variables."
        )
        self._environment_variables = value

    def __str__(self) -> str:
        return f"Environment(Name: {self.name},\nVersion: {self.version})"

    def __repr__(self) -> str:
        return json.dumps(self._as_dict(), indent=4, sort_keys=True, default=repr)

    def _as_dict(self) -> dict[str, Any]:
        python, docker = self.python, self.docker
        conda = python.conda_dependencies
        return {
            "name": self.name,
            "version": self.version,
            "environmentVariables": self._environment_variables,
            "python": {
                "userManagedDependencies": python.user_managed_dependencies,
                "interpreterPath": python.interpreter_path,
                "condaDependencies": conda.as_dict() if conda is not None else None,
            },
            "docker": {
                "enabled": docker.enabled,
                "baseImage": docker.base_image,
                "shmSize": docker.shm_size,
                "sharedVolumes": docker.shared_volumes,
                "arguments": docker.arguments,
            },
        }

    def clone(self, new_name: str) -> Environment:
        """A deep copy named ``new_name``, version None."""
        env = copy.deepcopy(self)
        env.name = _text(new_name, "new_name")
        env.version = None
        return env

    @staticmethod
    def from_pip_requirements(
        name: str, file_path: str | os.PathLike[str], pip_version: str | None = None
    ) -> Environment:
        """An environment whose pip list is a requirements file's lines.

        Comments and blank lines are dropped (pip ignores them too), continued lines are
        joined, options (``--extra-index-url``, ``-e ...``) are kept as pip options.
        ``-r``/``-c`` (another file) are refused: the agent only gets this list, so
        put those requirements in this file. The conda package ``pip`` (or
        ``pip=<pip_version>``) is added, as in Azure.
        """
        env = Environment(name=name)
        path = os.fspath(file_path)
        with open(path, encoding="utf-8") as file:
            requirements = _requirements(file.read(), path)
        conda = CondaDependencies()
        conda.set_pip_requirements(requirements)
        conda.add_conda_package(f"pip={pip_version}" if pip_version else "pip")
        env.python.conda_dependencies = conda
        return env

    @staticmethod
    def from_conda_specification(name: str, file_path: str | os.PathLike[str]) -> Environment:
        """An environment whose packages are a conda environment file's
        (``CondaDependencies(file_path)``); Python defaults to 3.9.12 as in Azure."""
        conda = CondaDependencies(conda_dependencies_file_path=file_path)
        if conda.get_python_version() is None:
            logger.warning('No Python version provided, defaulting to "%s"', PYTHON_DEFAULT_VERSION)
            conda.set_python_version(PYTHON_DEFAULT_VERSION)
        env = Environment(name=name)
        env.python.conda_dependencies = conda
        return env

    def register(self, workspace: object) -> Environment:
        """Not available: raises ``NotImplementedError`` (no environment registry)."""
        raise NotImplementedError(_NO_REGISTRY)

    @staticmethod
    def get(
        workspace: object, name: str, version: str | None = None, label: str | None = None
    ) -> Environment:
        """Not available: raises ``NotImplementedError`` (no environment registry)."""
        raise NotImplementedError(_NO_REGISTRY)

    @staticmethod
    def list(workspace: object) -> dict[str, Environment]:
        """Not available: raises ``NotImplementedError`` (no environment registry)."""
        raise NotImplementedError(_NO_REGISTRY)


def _requirements(text: str, source: str) -> builtins.list[str]:
    out: builtins.list[str] = []
    lines = iter(text.splitlines())
    for number, raw in enumerate(lines, 1):
        line = raw
        while line.endswith("\\"):
            line = line[:-1] + next(lines, "")
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if not line:
            continue
        flag = line.split()[0].split("=")[0]
        if flag in ("-r", "--requirement", "-c", "--constraint") or line.startswith(("-r", "-c")):
            raise ValueError(
                f"{source} line {number}: {line!r} names another file, which the agent does "
                "not get; put those requirements in this file"
            )
        out.append(line)
    return out


# ---- run configuration ---------------------------------------------------------------------


class TensorflowConfiguration(_ConfigElement):
    """A parameter-server TensorFlow job: ``worker_count`` workers (one node each) and
    ``parameter_server_count`` parameter servers."""

    __slots__ = ("parameter_server_count", "worker_count")

    def __init__(self, worker_count: int = 1, parameter_server_count: int = 1) -> None:
        self.worker_count = _count(worker_count, "worker_count")
        self.parameter_server_count = _count(
            parameter_server_count, "parameter_server_count", minimum=0
        )


class MpiConfiguration(_ConfigElement):
    """An MPI job: ``process_count_per_node`` processes on each of ``node_count`` nodes."""

    __slots__ = ("node_count", "process_count_per_node")

    def __init__(self, process_count_per_node: int = 1, node_count: int = 1) -> None:
        self.process_count_per_node = _count(process_count_per_node, "process_count_per_node")
        self.node_count = _count(node_count, "node_count")


class PyTorchConfiguration(_ConfigElement):
    """A ``torch.distributed`` job: ``process_count`` processes in all (default: one per
    node) over ``node_count`` nodes, backend ``'nccl'`` or ``'gloo'`` (given in any case,
    stored lower-case)."""

    __slots__ = ("communication_backend", "node_count", "process_count")

    def __init__(
        self, communication_backend: str = "Nccl", process_count: int | None = None,
        node_count: int = 1,
    ) -> None:
        if not isinstance(communication_backend, str):
            raise TypeError(
                "communication_backend must be 'Nccl' or 'Gloo', not "
                f"{_type_name(communication_backend)}"
            )
        if communication_backend.lower() not in _PYTORCH_BACKENDS:
            raise ValueError(
                f"{communication_backend} is not a supported backend. 'communication_backend' "
                "must be 'Nccl' or 'Gloo'."
            )
        self.communication_backend = communication_backend.lower()
        self.process_count = _optional_count(process_count, "process_count")
        self.node_count = _count(node_count, "node_count")


class DockerConfiguration(_ConfigElement):
    """Docker runtime settings of a run: ``use_docker`` (default False), ``shm_size``,
    ``shared_volumes``, extra ``arguments`` of ``docker run``."""

    __slots__ = ("arguments", "shared_volumes", "shm_size", "use_docker")

    def __init__(
        self, use_docker: bool = False, shared_volumes: bool = True,
        arguments: Sequence[str] = [],  # Azure's signature; copied, never shared
        shm_size: str | None = _DEFAULT_SHM_SIZE,
    ) -> None:
        self.use_docker = use_docker
        self.shared_volumes = shared_volumes
        self.arguments: list[str] = _argv(arguments, "arguments") if arguments else []
        self.shm_size = shm_size


class RunConfiguration(_ConfigElement):
    """Everything about a run but its source: ``target`` (default ``"local"``),
    ``environment`` (an ``Environment``, plainly assignable), ``environment_variables``,
    ``node_count``, ``max_run_duration_seconds`` (None: no limit), the distributed
    settings ``framework``/``communicator`` with ``mpi``/``pytorch``/``tensorflow``, and
    ``docker`` (a ``DockerConfiguration``). ``script``/``arguments``/``command`` are used
    when the ``ScriptRunConfig`` does not set its own.

    Runstream adds two queue settings, read by ``Experiment.submit`` (whose keywords of
    the same names win over them): ``priority`` (default 0; a target's queued runs start
    highest first, then in submission order) and ``max_retries`` (default 0; how many
    times a run whose agent was lost goes back to the queue instead of failing).

    ``_history_enabled``, ``_path`` and ``_name`` are Azure internals, accepted and unused.
    """

    __slots__ = (
        "_environment_variables", "_history_enabled", "_name", "_path", "_target",
        "arguments", "command", "communicator", "docker", "environment", "framework",
        "max_retries", "max_run_duration_seconds", "mpi", "node_count", "priority", "pytorch",
        "script", "tensorflow",
    )

    def __init__(
        self, script: str | None = None, arguments: Sequence[object] | None = None,
        framework: str | None = None, communicator: str | None = None,
        conda_dependencies: CondaDependencies | None = None, _history_enabled: object = None,
        _path: object = None, _name: object = None, command: Sequence[object] | str | None = None,
    ) -> None:
        self._name = _name
        self._path = _path
        self._history_enabled = _history_enabled
        self.script = script
        self.command: Sequence[object] | str = command if command else ""
        self.arguments: Sequence[object] = arguments if arguments else []
        self._target = "local"
        self.framework = framework if framework else "Python"
        self.communicator = communicator if communicator else "None"
        self.max_run_duration_seconds: int | None = None
        self.node_count = 1
        self.priority = 0
        self.max_retries = 0
        self.environment = Environment("default-environment")
        self.docker = DockerConfiguration()
        self.tensorflow = TensorflowConfiguration()
        self.mpi = MpiConfiguration()
        self.pytorch = PyTorchConfiguration()
        self._environment_variables: dict[str, Any] = {}
        if conda_dependencies is not None and not isinstance(conda_dependencies, CondaDependencies):
            raise TypeError(
                "conda_dependencies must be a CondaDependencies, not "
                f"{_type_name(conda_dependencies)}"
            )
        self.environment.python.conda_dependencies = conda_dependencies or CondaDependencies()

    @property
    def target(self) -> str:
        """The compute target's name; ``"local"`` by default. Set a name or an object with
        a ``name`` (a compute target)."""
        return self._target

    @target.setter
    def target(self, target: object) -> None:
        name = getattr(target, "name", None) if not isinstance(target, str) else target
        if not isinstance(name, str):
            raise TypeError(
                "target must be a compute target name or an object with a name, "
                f"not {_type_name(target)}"
            )
        self._target = check_name(name, "compute target")

    @property
    def environment_variables(self) -> dict[str, Any]:
        """Variables set for the run's process (over the environment's own)."""
        return self._environment_variables

    @environment_variables.setter
    def environment_variables(self, value: dict[str, Any]) -> None:
        self._environment_variables = value

    def __repr__(self) -> str:
        env = self.environment
        described = {
            "target": self._target,
            "script": self.script,
            "arguments": builtins.list(self.arguments),
            "command": self.command,
            "framework": self.framework,
            "communicator": self.communicator,
            "nodeCount": self.node_count,
            "maxRunDurationSeconds": self.max_run_duration_seconds,
            "priority": self.priority,
            "maxRetries": self.max_retries,
            "environmentVariables": self._environment_variables,
            "environment": env._as_dict() if isinstance(env, Environment) else repr(env),
        }
        return json.dumps(described, indent=4, default=repr)


# ---- ScriptRunConfig ----------------------------------------------------------------------


class ScriptRunConfig(_ConfigElement):
    """What to run (a script of ``source_directory`` with ``arguments``, or a ``command``)
    and how (``run_config``: target, environment, distribution, time limit), for
    ``Experiment.submit``.

    Without ``run_config`` a ``RunConfiguration()`` is made from ``compute_target``
    (default ``"local"``; a name, or an object with a ``name``), ``environment`` (default
    ``Environment("default-environment")``), ``distributed_job_config``,
    ``max_run_duration_seconds`` (default 30 days) and ``docker_runtime_config``. With
    ``run_config`` those five are ignored with a warning, as in Azure, and ``script``,
    ``arguments``, ``command`` given here win over the run configuration's.

    Checked here, raising ``ValueError``/``TypeError``: exactly one of ``script`` and
    ``command``; ``arguments`` only with ``script``, a list of str/int/float/bool/path
    values, each becoming one argv string verbatim (``str()``; no shell, no splitting);
    ``script`` a relative path without ``..`` (whether it exists is checked when the run is
    submitted, as in Azure); ``command`` an argv list (run without a shell, unlike Azure,
    which joins it with spaces) or a str (a shell command line).

    ``resume_from`` must be None: it takes an Azure ``DataPath`` and there are no datastores
    here; pass the checkpoint's location in ``arguments`` instead. ``_telemetry_values`` is
    accepted and unused. ``docker_runtime_config`` must be a ``DockerConfiguration``.
    """

    __slots__ = ("_telemetry_values", "arguments", "command", "run_config", "script",
                 "source_directory")

    MAX_DURATION_SECONDS_DEFAULT: ClassVar[int] = 2592000

    def __init__(
        self,
        source_directory: str | os.PathLike[str],
        script: str | os.PathLike[str] | None = None,
        arguments: Sequence[object] | None = None,
        run_config: RunConfiguration | None = None,
        _telemetry_values: object = None,
        compute_target: object = None,
        environment: Environment | None = None,
        distributed_job_config: (
            PyTorchConfiguration | MpiConfiguration | TensorflowConfiguration | None
        ) = None,
        resume_from: object = None,
        max_run_duration_seconds: int | None = MAX_DURATION_SECONDS_DEFAULT,
        command: Sequence[object] | str | None = None,
        docker_runtime_config: DockerConfiguration | None = None,
    ) -> None:
        self.source_directory = _check_source_directory(source_directory)
        self.script = script
        self.command = command
        self.arguments = arguments
        self._telemetry_values = _telemetry_values
        if resume_from is not None:
            raise ValueError(
                "resume_from takes an Azure DataPath and Runstream has no datastores: pass the "
                "checkpoint's location in arguments (e.g. ['--resume-from', path]) and load it "
                "in the script (a previous run's files: Run(experiment, run_id).download_files)"
            )
        if run_config is not None:
            self._use_run_config(
                run_config, max_run_duration_seconds,
                compute_target, environment, distributed_job_config, docker_runtime_config,
            )
        else:
            self.run_config = _new_run_config(
                compute_target, environment, distributed_job_config,
                max_run_duration_seconds, docker_runtime_config,
            )
        self._what_to_run()

    def _use_run_config(
        self, run_config: RunConfiguration, max_run_duration_seconds: object, *ignored: object
    ) -> None:
        if not isinstance(run_config, RunConfiguration):
            raise TypeError(f"run_config must be a RunConfiguration, not {_type_name(run_config)}")
        if max_run_duration_seconds != self.MAX_DURATION_SECONDS_DEFAULT or any(
            value is not None for value in ignored
        ):
            logger.warning(
                "If 'run_config' is specified, the following parameters will be ignored: "
                "'compute_target', 'environment', 'distributed_job_config', "
                "'max_run_duration_seconds', and 'docker_runtime_config'."
            )
        for name in ("script", "arguments", "command"):
            mine, theirs = _given(getattr(self, name)), _given(getattr(run_config, name))
            if mine and theirs:
                logger.warning(
                    "If '%s' has been provided here and in 'run_config', the '%s' provided "
                    "in ScriptRunConfig initialization will take precedence.", name, name
                )
            elif theirs:
                setattr(self, name, getattr(run_config, name))
        self.run_config = run_config

    def _what_to_run(self) -> tuple[str | None, builtins.list[str], Any]:
        """(script, argv arguments, command) as they will run; raises on a bad combination.
        ``command`` is an argv list, a shell str or None."""
        run_config = self.run_config
        if not isinstance(run_config, RunConfiguration):
            raise TypeError(f"run_config must be a RunConfiguration, not {_type_name(run_config)}")
        script, arguments, command = (
            mine if _given(mine) else theirs if _given(theirs) else None
            for mine, theirs in (
                (self.script, run_config.script),
                (self.arguments, run_config.arguments),
                (self.command, run_config.command),
            )
        )
        if script is not None and command is not None:
            raise ValueError(
                "ScriptRunConfig takes script= or command=, not both (as in Azure ML): put "
                "the script in the command (command=['python', 'train.py', ...]) or drop it"
            )
        if script is None and command is None:
            raise ValueError(
                "ScriptRunConfig needs script= (a file in source_directory, run by the "
                "environment's Python) or command= (a list: an argv run as is; a str: a shell "
                "command line)"
            )
        if command is not None and arguments is not None:
            raise ValueError(
                "arguments= go with script=; with command= put them in the command list"
            )
        if script is not None:
            argv = [] if arguments is None else _argv(arguments, "arguments")
            return _check_script(script), argv, None
        if isinstance(command, str):
            if "\x00" in command or not command.strip():
                raise ValueError(f"command {command!r} must be a shell command line, without NUL")
            return None, [], command
        argv = _argv(command, "command")
        if not argv[0].strip():
            raise ValueError("command[0] (the program) must not be empty")
        return None, [], argv

    def to_submission(self) -> dict[str, Any]:
        """What an agent needs to run this, as plain JSON-able data (checked again here,
        since every attribute can be reassigned after construction)::

            {
              "schema": 1,                     # SUBMISSION_SCHEMA
              "source_directory": str,         # as given: the submitter snapshots it
                                               # (and checks the script exists in it)
              "script": str | None,            # relative to source_directory
              "arguments": [str, ...],         # argv after the script, verbatim
              "command": [str, ...] | None,    # argv, run without a shell
              "shell_command": str | None,     # a shell command line
              "target": str,                   # compute target name, "local" by default
              "environment": {...},            # below
              "distributed": {...} | None,     # below
              "max_run_duration_seconds": int | None,   # None: no limit
              "environment_variables": {str: str},      # RunConfiguration's
            }

        Exactly one of ``script``, ``command`` and ``shell_command`` is set. A script runs
        as ``<interpreter> <script> <arguments...>`` in the snapshot's directory.

        ``environment``::

            {
              "name": str | None, "version": str | None,
              "user_managed": bool,   # True: run "interpreter" as it is, install nothing
              "interpreter": str,     # interpreter_path; "python" (the default) means the
                                      # agent's own interpreter (its sys.executable)
              "python_version": str | None,   # the conda "python=" version, a wish: an
                                              # agent without that Python may use its own
              "pip": [str, ...],      # pip requirements to install into a (cached)
                                      # virtualenv; azureml-* packages left out: the
                                      # agent makes the Runstream SDK importable itself
                                      # (what azureml-defaults did in Azure)
              "pip_options": [str, ...],  # requirements-file option lines, e.g.
                                          # "--extra-index-url https://..."; write them
                                          # before "pip" in one requirements file
              "pip_version": str | None,  # from a conda "pip=<version>" (conda syntax)
              "conda": [str, ...],    # other conda packages, verbatim (conda syntax:
                                      # "numpy=1.21" is pip's "numpy==1.21.*"); agents
                                      # have no conda, so they try them with pip and
                                      # fail the run if pip cannot install them
              "docker": bool,         # docker.enabled or run_config.docker.use_docker
              "base_image": str | None,
              "docker_shm_size": str | None, "docker_arguments": [str, ...],
              "variables": {str: str},    # the environment's environment_variables
            }

        When ``user_managed`` is True, ``pip``, ``pip_options``, ``pip_version`` and
        ``conda`` are informative only (as in Azure). The process's environment is the
        agent's, then ``environment.variables``, then ``environment_variables`` (the run
        configuration's win), then the agent's own ``RUNSTREAM_*`` run variables.

        ``distributed`` (None: one process)::

            {"kind": "pytorch", "backend": "nccl" | "gloo", "node_count": int,
             "process_count": int}                   # in all; default one per node
            {"kind": "mpi", "node_count": int, "process_count_per_node": int,
             "process_count": int}                   # node_count * per node
            {"kind": "tensorflow", "node_count": int, "worker_count": int,
             "parameter_server_count": int}
        """
        script, arguments, command = self._what_to_run()
        run_config = self.run_config
        return {
            "schema": SUBMISSION_SCHEMA,
            "source_directory": _check_source_directory(self.source_directory),
            "script": script,
            "arguments": arguments,
            "command": command if isinstance(command, builtins.list) else None,
            "shell_command": command if isinstance(command, str) else None,
            "target": check_name(run_config.target, "compute target"),
            "environment": _environment_submission(run_config.environment, run_config.docker),
            "distributed": _distributed_submission(run_config),
            "max_run_duration_seconds": _optional_count(
                run_config.max_run_duration_seconds, "run_config.max_run_duration_seconds"
            ),
            "environment_variables": _variables(
                run_config.environment_variables, "run_config.environment_variables"
            ),
        }


def _given(value: object) -> bool:
    """Whether script/arguments/command is set: Azure tests truthiness; a value of a wrong
    type counts as set, so that its check reports it (an array's truth is ambiguous)."""
    if value is None:
        return False
    if isinstance(value, str | list | tuple):
        return len(value) > 0
    return True


def _new_run_config(
    compute_target: object, environment: object, distributed_job_config: object,
    max_run_duration_seconds: object, docker_runtime_config: object,
) -> RunConfiguration:
    run_config = RunConfiguration()
    run_config.target = compute_target if compute_target else "local"
    if environment is not None and not isinstance(environment, Environment):
        raise TypeError(
            "environment must be an Environment (from producer import Environment), not "
            f"{_type_name(environment)}"
        )
    run_config.environment = environment or Environment("default-environment")
    run_config.max_run_duration_seconds = _optional_count(
        max_run_duration_seconds, "max_run_duration_seconds"
    )
    if isinstance(distributed_job_config, TensorflowConfiguration):
        run_config.node_count = distributed_job_config.worker_count
        run_config.tensorflow = distributed_job_config
        run_config.framework, run_config.communicator = "TensorFlow", "ParameterServer"
    elif isinstance(distributed_job_config, MpiConfiguration):
        run_config.node_count = distributed_job_config.node_count
        run_config.mpi = distributed_job_config
        run_config.framework, run_config.communicator = "Python", "IntelMpi"
    elif isinstance(distributed_job_config, PyTorchConfiguration):
        run_config.node_count = distributed_job_config.node_count
        run_config.pytorch = distributed_job_config
        run_config.framework = "PyTorch"
        run_config.communicator = distributed_job_config.communication_backend
    elif distributed_job_config is not None:
        raise TypeError(
            "distributed_job_config must be a PyTorchConfiguration, MpiConfiguration or "
            f"TensorflowConfiguration, not {_type_name(distributed_job_config)}"
        )
    if docker_runtime_config is not None:
        if not isinstance(docker_runtime_config, DockerConfiguration):
            raise TypeError(
                "docker_runtime_config must be a DockerConfiguration, not "
                f"{_type_name(docker_runtime_config)}"
            )
        run_config.docker = docker_runtime_config
    elif environment is not None:
        docker = environment.docker
        run_config.docker = DockerConfiguration(
            use_docker=docker.enabled, shared_volumes=docker.shared_volumes,
            arguments=docker.arguments, shm_size=docker.shm_size,
        )
    return run_config


def _environment_submission(env: object, docker_config: object) -> dict[str, Any]:
    if not isinstance(env, Environment):
        raise TypeError(
            f"run_config.environment must be an Environment, not {_type_name(env)}"
        )
    if not isinstance(docker_config, DockerConfiguration):
        raise TypeError(
            f"run_config.docker must be a DockerConfiguration, not {_type_name(docker_config)}"
        )
    python, docker = env.python, env.docker
    if not isinstance(python, PythonSection) or not isinstance(docker, DockerSection):
        raise TypeError("environment.python and environment.docker must stay the sections it made")
    if env.name is not None and not isinstance(env.name, str):
        raise TypeError(f"environment.name must be a str, not {_type_name(env.name)}")
    if docker.base_image is not None and not isinstance(docker.base_image, str):
        raise TypeError(f"docker.base_image must be a str, not {_type_name(docker.base_image)}")
    conda = python.conda_dependencies
    if conda is not None and not isinstance(conda, CondaDependencies):
        raise TypeError(
            "environment.python.conda_dependencies must be a CondaDependencies, not "
            f"{_type_name(conda)}"
        )
    packages, pip_version = [], None
    for spec in conda.conda_packages if conda is not None else ():
        name = _package_name(spec)
        if name == "pip":
            pip_version = spec[len(name):].lstrip("=").strip() or None
        elif name != "python":
            packages.append(spec)
    use_docker = _flag(docker_config.use_docker, "run_config.docker.use_docker")
    from_run = use_docker  # the run's Docker settings apply when it asked for Docker
    enabled = _flag(docker.enabled, "environment.docker.enabled") or use_docker
    shm_size = docker_config.shm_size if from_run else docker.shm_size
    return {
        "name": env.name,
        "version": None if env.version is None else str(env.version),
        "user_managed": _flag(
            python.user_managed_dependencies, "environment.python.user_managed_dependencies"
        ),
        "interpreter": _text(python.interpreter_path, "environment.python.interpreter_path"),
        "python_version": conda.get_python_version() if conda is not None else None,
        "pip": [p for p in conda.pip_packages if not _is_azureml(p)] if conda is not None else [],
        "pip_options": builtins.list(conda.pip_options) if conda is not None else [],
        "pip_version": pip_version,
        "conda": packages,
        "docker": enabled,
        "base_image": docker.base_image,
        "docker_shm_size": None if shm_size is None else _text(shm_size, "docker shm_size"),
        "docker_arguments": _argv(
            docker_config.arguments if from_run else docker.arguments, "docker arguments"
        ),
        "variables": _variables(env.environment_variables, "environment.environment_variables"),
    }


def _distributed_submission(run_config: RunConfiguration) -> dict[str, Any] | None:
    framework = str(run_config.framework).lower()
    communicator = str(run_config.communicator).lower()
    node_count = _count(run_config.node_count, "run_config.node_count")
    if framework == "pytorch":
        pytorch = run_config.pytorch
        backend = str(pytorch.communication_backend).lower()
        if backend not in _PYTORCH_BACKENDS:
            raise ValueError(
                f"{pytorch.communication_backend} is not a supported backend. "
                "'communication_backend' must be 'Nccl' or 'Gloo'."
            )
        process_count = _optional_count(pytorch.process_count, "pytorch.process_count")
        return {
            "kind": "pytorch", "backend": backend, "node_count": node_count,
            "process_count": process_count or node_count,
        }
    if framework == "tensorflow" and communicator == "parameterserver":
        tensorflow = run_config.tensorflow
        return {
            "kind": "tensorflow", "node_count": node_count,
            "worker_count": _count(tensorflow.worker_count, "tensorflow.worker_count"),
            "parameter_server_count": _count(
                tensorflow.parameter_server_count, "tensorflow.parameter_server_count", 0
            ),
        }
    if framework == "python" and communicator in _MPI_COMMUNICATORS:
        per_node = _count(run_config.mpi.process_count_per_node, "mpi.process_count_per_node")
        return {
            "kind": "mpi", "node_count": node_count, "process_count_per_node": per_node,
            "process_count": per_node * node_count,
        }
    if framework == "python" and communicator == "none":
        if node_count != 1:
            raise ValueError(
                f"run_config.node_count is {node_count} but the run is not distributed: "
                "pass distributed_job_config=PyTorchConfiguration(...) or MpiConfiguration(...)"
            )
        return None
    raise ValueError(
        f"framework {run_config.framework!r} with communicator {run_config.communicator!r} "
        "is not supported: use distributed_job_config=PyTorchConfiguration, "
        "MpiConfiguration or TensorflowConfiguration"
    )
