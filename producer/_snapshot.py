"""Source snapshots for ``experiment.submit(ScriptRunConfig(source_directory=..., ...))``.

A submitted ``source_directory`` is packed into one zip, uploaded to the content-addressed
blob store and later unpacked on an agent into a fresh working directory. This module is
the pure part of that: which files go in, the zip itself, and unpacking it safely. It
talks to no network, Kafka or database.

What goes in (``collect_files``):

- The ignore file is ``.amlignore`` at the root of ``source_directory`` if there is one,
  else ``.gitignore`` at the root, else none — as in Azure ML; when both exist only
  ``.amlignore`` is read. Its rules are gitignore syntax (``IgnoreRules``). Ignore files in
  subfolders (nested ``.gitignore``) are not read, nor git's ``info/exclude`` or global
  excludes file.
- The ignore file is a file of the folder like any other: it is in the snapshot unless its
  own rules exclude it (Azure ML does the same).
- Any entry named ``.git`` (a repository's directory, or the ``.git`` file of a worktree or
  submodule), at any depth, is always left out, whatever the rules say. Azure ML v1 only
  leaves it out when its ignore file says so.
- Only regular files are stored; empty directories are not recorded. A symlink to a
  regular file whose target resolves inside ``source_directory`` is stored as a regular
  file with the target's content (under the link's name). Every other symlink — one to a
  directory (never followed, so no cycles), one pointing outside the folder, a dangling
  one — and every FIFO, socket or device is skipped with a logged warning.
- A kept file whose name the extraction would refuse (a backslash, a drive-letter prefix
  such as ``C:``, bytes that are not UTF-8) raises ``SnapshotError``: rename or ignore it.
- Over a limit (by default 300 MB, i.e. 300 * 2**20 bytes, of file content, and 2,000
  files; see ``resolve_limits``) a ``SnapshotError`` is raised after listing the folder
  and before any file but the ignore file is read, naming the measured size or count,
  the limit, the ignore file to edit and how to raise the limit.

The zip (``build_snapshot``) is deterministic: entries sorted by name, every timestamp
1980-01-01 00:00, mode 0644 or 0755 (only the owner's executable bit is kept), no extra
fields or comments, ZIP_DEFLATED at zlib's default level. The same folder content gives a
byte-identical zip — given the same Python ``zipfile`` and zlib, whose output another
build may encode differently (that costs one re-upload, never a wrong result) — so its
SHA-256 is a content address and resubmitting an unchanged folder uploads nothing new.

Unpacking (``extract_snapshot``) checks every entry before it writes anything, and
refuses the whole archive over any unsafe entry (see its docstring).

Matching is on Unicode characters and case-sensitive, as git on Linux (where ``?`` and
``[...]`` match one byte of UTF-8, here they match one character).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ._env import EnvReader
from ._errors import ConfigError, ProducerError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_FILES",
    "IgnoreRules",
    "Snapshot",
    "SnapshotError",
    "SourceFile",
    "build_snapshot",
    "collect_files",
    "extract_snapshot",
    "resolve_limits",
]

logger = logging.getLogger(__name__)

#: Default limit on the file content of a snapshot (300 MB, as Azure ML).
DEFAULT_MAX_BYTES = 300 * 1024 * 1024
#: Default limit on the number of files of a snapshot (as Azure ML).
DEFAULT_MAX_FILES = 2000
MAX_BYTES_VAR = "RUNSTREAM_SNAPSHOT_MAX_BYTES"
MAX_FILES_VAR = "RUNSTREAM_SNAPSHOT_MAX_FILES"
#: Ignore files looked for at the root of source_directory, the first found is read.
IGNORE_FILE_NAMES = (".amlignore", ".gitignore")
#: Entry name left out of every snapshot, at any depth.
ALWAYS_LEFT_OUT = ".git"
#: Timestamp of every zip entry (the earliest a zip can hold).
ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)
CHUNK_BYTES = 1 << 20

_StrPath = str | os.PathLike[str]


class SnapshotError(ProducerError, ValueError):
    """A snapshot cannot be built (bad folder, over a limit) or extracted (unsafe zip)."""


# ---- gitignore rules --------------------------------------------------------------------

_NEVER = "(?!)"  # a regex that matches nothing
#: ``[:name:]`` classes of git's wildmatch, as regex class contents (ASCII).
_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "\\x21-\\x7e",
    "lower": "a-z",
    "print": "\\x20-\\x7e",
    "punct": "\\x21-\\x2f\\x3a-\\x40\\x5b-\\x60\\x7b-\\x7e",
    "space": "\\t\\n\\r ",
    "upper": "A-Z",
    "xdigit": "0-9A-Fa-f",
}


def _bracket_regex(pattern: str, start: int) -> tuple[str, int] | None:
    """The ``[...]`` class at ``pattern[start]`` as a regex and the index after its ``]``;
    None where git's wildmatch gives up on the whole pattern (unterminated class, unknown
    ``[:name:]``). A class never matches ``/``."""
    n = len(pattern)
    i = start + 1
    negated = i < n and pattern[i] in "!^"
    if negated:
        i += 1
    parts: list[str] = []
    prev: str | None = None  # the last single character, which may open a range
    first = True
    while True:
        if i >= n:
            return None
        char = pattern[i]
        if char == "]" and not first:
            break
        first = False
        if char == "\\":
            i += 1
            if i >= n:
                return None
            prev = pattern[i]
            parts.append(re.escape(prev))
        elif char == "-" and prev is not None and i + 1 < n and pattern[i + 1] != "]":
            i += 1
            high = pattern[i]
            if high == "\\":
                i += 1
                if i >= n:
                    return None
                high = pattern[i]
            if prev <= high:
                parts.append(f"{re.escape(prev)}-{re.escape(high)}")
            prev = None
        elif char == "[" and pattern.startswith(":", i + 1):
            close = pattern.find("]", i + 2)
            if close < 0:
                return None
            if close - (i + 2) < 1 or pattern[close - 1] != ":":
                # No ":]": a literal '[', and the ':' is read as the next member.
                prev = "["
                parts.append(re.escape(prev))
            else:
                members = _POSIX_CLASSES.get(pattern[i + 2 : close - 1])
                if members is None:
                    return None
                parts.append(members)
                prev = None
                i = close
        else:
            prev = char
            parts.append(re.escape(char))
        i += 1
    body = "".join(parts)
    if negated:
        return f"[^/{body}]", i + 1
    return (f"(?!/)[{body}]" if body else _NEVER), i + 1


def _wildmatch_regex(pattern: str) -> str:
    """A regex that ``fullmatch``-es what git's ``wildmatch(pattern, WM_PATHNAME)`` does.

    ``*`` and ``?`` and classes do not match ``/``; ``**`` between slashes (or at either
    end) matches across them: ``**/x`` is x at any depth, ``a/**`` everything inside a,
    ``a/**/b`` b at any depth under a (a/b included); any other ``**`` is ``*``.
    ``\\x`` is a literal x; a pattern ending in a lone backslash matches nothing.
    """
    out: list[str] = []
    n = len(pattern)
    i = 0
    while i < n:
        char = pattern[i]
        if char == "\\":
            if i + 1 == n:
                return _NEVER
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif char == "*":
            end = i
            while end < n and pattern[end] == "*":
                end += 1
            if end - i >= 2 and (i == 0 or pattern[i - 1] == "/"):
                if end == n:
                    out.append(".*")
                    i = end
                    continue
                slash = 1 if pattern[end] == "/" else 2 if pattern.startswith("\\/", end) else 0
                if slash:
                    out.append("(?:.*/)?")
                    i = end + slash
                    continue
            out.append("[^/]*")
            i = end
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[":
            bracket = _bracket_regex(pattern, i)
            if bracket is None:
                return _NEVER
            regex, i = bracket
            out.append(regex)
        else:
            out.append(re.escape(char))
            i += 1
    return "".join(out)


def _trim_trailing_spaces(line: str) -> str:
    """``line`` without its trailing spaces, except one escaped with a backslash."""
    last_space: int | None = None
    i = 0
    while i < len(line):
        char = line[i]
        if char == " ":
            if last_space is None:
                last_space = i
        else:
            if char == "\\":
                i += 1
                if i == len(line):
                    return line
            last_space = None
        i += 1
    return line if last_space is None else line[:last_space]


@dataclass(frozen=True)
class _Rule:
    line: str
    regex: re.Pattern[str]
    negated: bool
    dir_only: bool
    basename_only: bool


def _parse_rule(line: str) -> _Rule | None:
    """One line of an ignore file as a rule, or None for a blank line or a comment."""
    if not line or line.startswith("#"):
        return None
    pattern = _trim_trailing_spaces(line)
    negated = pattern.startswith("!")
    if negated:
        pattern = pattern[1:]
    dir_only = pattern.endswith("/")
    if dir_only:
        pattern = pattern[:-1]
    if not pattern:
        return None
    basename_only = "/" not in pattern
    if pattern.startswith("/"):
        pattern = pattern[1:]
    regex = re.compile(_wildmatch_regex(pattern), re.DOTALL)
    return _Rule(line, regex, negated, dir_only, basename_only)


class IgnoreRules:
    """The rules of one ignore file, in gitignore syntax (https://git-scm.com/docs/gitignore).

    - Blank lines match nothing; a line starting with ``#`` is a comment (``\\#`` is a
      literal ``#``). Trailing spaces are dropped unless escaped (``\\ ``); leading ones
      are part of the pattern. A UTF-8 BOM and CRLF line ends are accepted.
    - ``!`` negates (``\\!`` is a literal ``!``); the last rule that matches a path wins.
    - A trailing ``/`` matches directories only.
    - A pattern with a ``/`` at its start or in the middle is anchored to the root and
      matched against the whole path; one without is matched against the name at any
      depth.
    - ``*`` matches anything but ``/``, ``?`` one character but ``/``, ``[a-z]``,
      ``[!a-z]``/``[^a-z]`` and ``[[:digit:]]`` one character of (not of) a class;
      ``**/`` at the start, ``/**`` at the end and ``/**/`` in the middle cross
      directories.
    - A path inside an excluded directory is excluded, whatever later rules say: git
      never looks inside an excluded directory, so a negation cannot re-include it.

    Paths are relative to the directory of the ignore file, with ``/`` separators.
    """

    def __init__(self, rules: Sequence[_Rule] = (), source: Path | None = None) -> None:
        self._rules = tuple(rules)
        #: The ignore file the rules were read from, or None.
        self.source = source

    def __repr__(self) -> str:
        return f"IgnoreRules({len(self._rules)} rules from {self.source})"

    @classmethod
    def parse(cls, text: str, source: Path | None = None) -> IgnoreRules:
        """Rules from the text of an ignore file."""
        lines = text.removeprefix("\ufeff").split("\n")
        rules = [_parse_rule(line.removesuffix("\r")) for line in lines]
        return cls([rule for rule in rules if rule is not None], source)

    @classmethod
    def for_directory(cls, directory: _StrPath) -> IgnoreRules:
        """Rules of ``directory/.amlignore`` if it is a file, else ``directory/.gitignore``,
        else no rules (``source`` None). Undecodable bytes are kept as os.fsdecode would
        (surrogate escapes), so they match the names read from the disk."""
        root = Path(directory)
        for name in IGNORE_FILE_NAMES:
            path = root / name
            if path.is_file():
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    raise SnapshotError(f"cannot read {path}: {exc.strerror or exc}") from exc
                return cls.parse(data.decode("utf-8", "surrogateescape"), path)
        return cls()

    def _excludes(self, path: str, is_dir: bool) -> bool:
        """Whether the last rule matching ``path`` itself excludes it (parents unchecked)."""
        basename = path.rpartition("/")[2]
        for rule in reversed(self._rules):
            if rule.dir_only and not is_dir:
                continue
            if rule.regex.fullmatch(basename if rule.basename_only else path):
                return not rule.negated
        return False

    def is_ignored(self, path: str, *, is_dir: bool = False) -> bool:
        """Whether ``path`` (relative, ``/``-separated; ``is_dir`` for a directory) is
        excluded, by a rule matching it or one of the directories it is in."""
        parts = path.split("/")
        for depth in range(1, len(parts)):
            if self._excludes("/".join(parts[:depth]), True):
                return True
        return self._excludes(path, is_dir)


# ---- collecting ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceFile:
    """One file of a snapshot: its ``name`` in the zip (relative, ``/``-separated), the
    ``path`` to read (a followed symlink's resolved target), its size and whether the
    owner may execute it."""

    name: str
    path: Path
    size: int
    executable: bool


def resolve_limits(max_bytes: int | None = None, max_files: int | None = None) -> tuple[int, int]:
    """(max_bytes, max_files): each argument as given, or when None the environment's
    ``RUNSTREAM_SNAPSHOT_MAX_BYTES`` / ``RUNSTREAM_SNAPSHOT_MAX_FILES``, or when unset
    ``DEFAULT_MAX_BYTES`` / ``DEFAULT_MAX_FILES``. The environment is read at each call
    (``experiment.submit`` is an edge of the SDK). A limit below 1 raises ``ValueError``
    (``ConfigError`` naming the variable when it came from the environment)."""
    env = EnvReader()
    limits: list[int] = []
    for given, variable, default in (
        (max_bytes, MAX_BYTES_VAR, DEFAULT_MAX_BYTES),
        (max_files, MAX_FILES_VAR, DEFAULT_MAX_FILES),
    ):
        value = env.integer(variable, default) if given is None else given
        if value < 1:
            if given is None:
                raise ConfigError(variable, f"must be at least 1, not {value}")
            argument = "max_bytes" if variable == MAX_BYTES_VAR else "max_files"
            raise ValueError(f"{argument} must be at least 1, not {value}")
        limits.append(value)
    return limits[0], limits[1]


def _source_root(source_directory: _StrPath) -> Path:
    root = Path(source_directory)
    if not root.exists():
        raise SnapshotError(f"source_directory {root} does not exist")
    if not root.is_dir():
        raise SnapshotError(f"source_directory {root} is not a directory")
    return root


def _name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an entry of a snapshot, or None (see extract_snapshot)."""
    if not name:
        return "it is empty"
    if "\x00" in name:
        return "it holds a NUL character"
    if "\\" in name:
        return "it holds a backslash"
    if name.startswith("/"):
        return "it is an absolute path"
    if re.match(r"[A-Za-z]:", name):
        return "it starts with a drive letter"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "it has an empty, '.' or '..' component"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    return None


def _linked_file(entry: os.DirEntry[str], name: str, real_root: Path) -> SourceFile | None:
    """The file a symlink stands for, or None (logged) when it is not followed."""
    try:
        target = Path(entry.path).resolve(strict=True)
        info = target.stat()
    except (OSError, RuntimeError):
        logger.warning("snapshot: skipping symlink %s: its target does not exist", name)
        return None
    if not target.is_relative_to(real_root):
        logger.warning("snapshot: skipping symlink %s: it points outside the folder", name)
        return None
    if stat.S_ISDIR(info.st_mode):
        logger.warning(
            "snapshot: skipping symlink %s: links to directories are never followed", name
        )
        return None
    if not stat.S_ISREG(info.st_mode):
        logger.warning("snapshot: skipping symlink %s: its target is not a regular file", name)
        return None
    return SourceFile(name, target, info.st_size, bool(info.st_mode & stat.S_IXUSR))


def _walk(root: Path, rules: IgnoreRules) -> list[SourceFile]:
    """The files of ``root`` the rules keep, sorted by name; reads no file content."""
    real_root = root.resolve()
    found: list[SourceFile] = []
    pending: list[tuple[Path, str]] = [(root, "")]
    while pending:
        directory, prefix = pending.pop()
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as exc:
            raise SnapshotError(f"cannot list {directory}: {exc.strerror or exc}") from exc
        for entry in entries:
            if entry.name == ALWAYS_LEFT_OUT:
                continue
            name = prefix + entry.name
            is_dir = entry.is_dir(follow_symlinks=False)
            if rules._excludes(name, is_dir):  # its directories were checked on the way
                continue
            if is_dir:
                pending.append((Path(entry.path), name + "/"))
                continue
            if entry.is_symlink():
                source = _linked_file(entry, name, real_root)
                if source is None:
                    continue
            else:
                info = entry.stat(follow_symlinks=False)
                if not stat.S_ISREG(info.st_mode):
                    logger.warning("snapshot: skipping %s: not a regular file", name)
                    continue
                source = SourceFile(
                    name, Path(entry.path), info.st_size, bool(info.st_mode & stat.S_IXUSR)
                )
            problem = _name_problem(name)
            if problem is not None:
                raise SnapshotError(
                    f"{os.fspath(root / name)!r} cannot be put in a snapshot: {problem}; "
                    "rename it or add it to the ignore file"
                )
            found.append(source)
    found.sort(key=lambda source: source.name)
    return found


def _size(size: int) -> str:
    """``size`` bytes for a message: ``1.5 MB (1,572,864 bytes)``, or ``512 bytes``."""
    return f"{size / 2**20:,.1f} MB ({size:,} bytes)" if size >= 2**20 else f"{size:,} bytes"


def _largest(files: Sequence[SourceFile], by_bytes: bool) -> str:
    """The three top-level entries holding the most bytes (or files), for a message."""
    totals: dict[str, list[int]] = {}
    for source in files:
        top, slash, _ = source.name.partition("/")
        counts = totals.setdefault(top + slash, [0, 0])
        counts[0] += 1
        counts[1] += source.size
    ranked = sorted(totals.items(), key=lambda item: (-item[1][1 if by_bytes else 0], item[0]))
    return ", ".join(
        f"{top} ({count:,} file{'s' if count != 1 else ''}, {_size(size)})"
        for top, (count, size) in ranked[:3]
    )


def _over_limit(
    root: Path,
    files: Sequence[SourceFile],
    total: int,
    max_bytes: int,
    max_files: int,
    ignore_file: Path | None,
) -> SnapshotError:
    over_files = len(files) > max_files
    over_bytes = total > max_bytes
    measured: list[str] = []
    raise_with: list[str] = []
    if over_files:
        measured.append(f"{len(files):,} files, over the {max_files:,}-file snapshot limit")
        raise_with.append(f"{MAX_FILES_VAR}={len(files)} (or max_files=)")
    if over_bytes:
        measured.append(f"{_size(total)}, over the {_size(max_bytes)} snapshot limit")
        raise_with.append(f"{MAX_BYTES_VAR}={total} (or max_bytes=)")
    target = ignore_file or root / IGNORE_FILE_NAMES[0]
    hint = ""
    if ignore_file is not None and ignore_file.name != IGNORE_FILE_NAMES[0]:
        hint = f" (or create {root / IGNORE_FILE_NAMES[0]}, which is then read instead)"
    return SnapshotError(
        f"source_directory {root} has {' and '.join(measured)}: add the ones the run does "
        f"not need to {target} (gitignore syntax){hint}, or raise the limit with "
        f"{' and '.join(raise_with)}. Largest entries: {_largest(files, over_bytes)}"
    )


def _collect(
    root: Path, rules: IgnoreRules, max_bytes: int, max_files: int
) -> tuple[list[SourceFile], int]:
    files = _walk(root, rules)
    total = sum(source.size for source in files)
    if len(files) > max_files or total > max_bytes:
        raise _over_limit(root, files, total, max_bytes, max_files, rules.source)
    return files, total


def collect_files(
    source_directory: _StrPath, *, max_bytes: int | None = None, max_files: int | None = None
) -> list[SourceFile]:
    """The files of a snapshot of ``source_directory``, sorted by name (see the module's
    docstring for what goes in). Lists and stats only, reads no content. Raises
    ``SnapshotError`` when the folder is missing or not a directory, a name cannot be
    stored, or the files are over a limit (``resolve_limits``)."""
    root = _source_root(source_directory)
    limit_bytes, limit_files = resolve_limits(max_bytes, max_files)
    return _collect(root, IgnoreRules.for_directory(root), limit_bytes, limit_files)[0]


# ---- building -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """A built snapshot zip. The caller owns the file at ``path``: ``discard()`` (or using
    the snapshot as a context manager) deletes it.

    ``sha256`` (hex) and ``size`` are those of the zip file; ``content_bytes`` is the sum
    of the stored files' sizes; ``names`` the entries in zip order (sorted);
    ``ignore_file`` the ignore file that was read, or None.
    """

    path: Path
    sha256: str
    size: int
    file_count: int
    content_bytes: int
    names: tuple[str, ...]
    ignore_file: Path | None

    def discard(self) -> None:
        """Delete the zip file (no error if it is already gone)."""
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.discard()


def _zip_info(source: SourceFile) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(source.name, date_time=ZIP_TIMESTAMP)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # Unix, so external_attr carries the mode
    info.external_attr = (stat.S_IFREG | (0o755 if source.executable else 0o644)) << 16
    info.file_size = source.size  # decides zip64 up front, from the listed size
    return info


def _write_entries(
    archive: zipfile.ZipFile, files: Iterable[SourceFile], root: Path, max_bytes: int
) -> int:
    written = 0
    for source in files:
        try:
            with open(source.path, "rb") as src, archive.open(_zip_info(source), "w") as dst:
                while chunk := src.read(CHUNK_BYTES):
                    written += len(chunk)
                    if written > max_bytes:
                        raise SnapshotError(
                            f"source_directory {root} grew over the {_size(max_bytes)} snapshot "
                            f"limit while it was being read (at {source.name})"
                        )
                    dst.write(chunk)
        except OSError as exc:
            raise SnapshotError(
                f"cannot add {source.path} to the snapshot: {exc.strerror or exc}"
            ) from exc
    return written


def build_snapshot(
    source_directory: _StrPath,
    *,
    max_bytes: int | None = None,
    max_files: int | None = None,
    work_dir: _StrPath | None = None,
) -> Snapshot:
    """Zip the files of ``source_directory`` (``collect_files``) into a new temporary file
    in ``work_dir`` (default: the system's temporary directory), deterministically (see
    the module's docstring), and hash it.

    Limits (``resolve_limits``) are checked before any file but the ignore file is read,
    and the bytes are counted again while reading, should a file grow meanwhile. Raises
    ``SnapshotError``; on any error the temporary file is deleted.
    """
    root = _source_root(source_directory)
    limit_bytes, limit_files = resolve_limits(max_bytes, max_files)
    rules = IgnoreRules.for_directory(root)
    files, _ = _collect(root, rules, limit_bytes, limit_files)
    handle, temporary = tempfile.mkstemp(prefix="runstream-snapshot-", suffix=".zip", dir=work_dir)
    path = Path(temporary)
    try:
        with os.fdopen(handle, "w+b") as raw:
            with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                written = _write_entries(archive, files, root, limit_bytes)
            size = raw.tell()
            raw.seek(0)
            digest = hashlib.sha256()
            while chunk := raw.read(CHUNK_BYTES):
                digest.update(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Snapshot(
        path=path,
        sha256=digest.hexdigest(),
        size=size,
        file_count=len(files),
        content_bytes=written,
        names=tuple(source.name for source in files),
        ignore_file=rules.source,
    )


# ---- extracting ---------------------------------------------------------------------------


def _entry_problem(info: zipfile.ZipInfo, name: str, is_dir: bool, real_target: Path) -> str | None:
    """Why the zip entry ``info`` (``name`` without a trailing '/') is unsafe, or None."""
    problem = _name_problem(name)
    if problem is not None:
        return problem
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        return "it is a symlink"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "it is not a regular file or directory"
    if kind == stat.S_IFDIR and not is_dir:
        return "it is a directory whose name does not end in '/'"
    if info.flag_bits & 0x1:
        return "it is encrypted"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return f"its compression method {info.compress_type} is neither stored nor deflated"
    if not (real_target / name).resolve().is_relative_to(real_target):
        return "it would be written outside the target directory"
    return None


def _check_entries(
    entries: Sequence[zipfile.ZipInfo], real_target: Path, max_bytes: int, max_files: int
) -> list[tuple[zipfile.ZipInfo, str, bool]]:
    """(entry, name without a trailing '/', is a directory) for every entry, or
    ``SnapshotError`` over the first unsafe one."""
    checked: list[tuple[zipfile.ZipInfo, str, bool]] = []
    seen: set[str] = set()
    files: set[str] = set()
    parents: set[str] = set()
    for info in entries:
        raw_name = info.orig_filename  # zipfile cuts ``filename`` at a NUL
        is_dir = raw_name.endswith("/")
        name = raw_name[:-1] if is_dir else raw_name
        problem = _entry_problem(info, name, is_dir, real_target)
        if problem is None and name in seen:
            problem = "it is in the archive twice"
        if problem is not None:
            raise SnapshotError(f"unsafe snapshot entry {raw_name!r}: {problem}")
        seen.add(name)
        (parents if is_dir else files).add(name)
        parts = name.split("/")
        parents.update("/".join(parts[:depth]) for depth in range(1, len(parts)))
        checked.append((info, name, is_dir))
    clash = sorted(files & parents)
    if clash:
        raise SnapshotError(
            f"unsafe snapshot entry {clash[0]!r}: it is both a file and a directory"
        )
    if len(files) > max_files:
        raise SnapshotError(
            f"the snapshot has {len(files):,} files, over the {max_files:,}-file limit"
        )
    declared = sum(info.file_size for info, _, is_dir in checked if not is_dir)
    if declared > max_bytes:
        raise SnapshotError(
            f"the snapshot unpacks to {_size(declared)}, over the {_size(max_bytes)} limit"
        )
    return checked


def _clear(target: Path, created: bool) -> None:
    """Remove what an extraction wrote (``target`` was empty or absent before)."""
    if created:
        shutil.rmtree(target, ignore_errors=True)
        return
    for child in target.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def extract_snapshot(
    zip_path: _StrPath,
    target_dir: _StrPath,
    *,
    max_bytes: int | None = None,
    max_files: int | None = None,
) -> list[str]:
    """Unpack the snapshot zip at ``zip_path`` into ``target_dir`` (created when absent;
    it must be an empty directory otherwise); returns the names of the files written,
    sorted.

    Every entry is checked before anything is written; the whole archive is refused
    (``SnapshotError``) when an entry's name is empty, absolute, starts with a drive
    letter, holds a backslash or a NUL, has an empty, ``.`` or ``..`` component, or would
    land outside ``target_dir`` once resolved; when an entry is a symlink or another
    special file, encrypted, compressed other than stored/deflated, in the archive twice,
    or both a file and a directory; and when the files are more than ``max_files`` or
    their declared sizes add up to more than ``max_bytes`` (``resolve_limits``). While
    writing, the bytes are counted again and an entry longer than it declared, a CRC
    mismatch or a name that already exists (e.g. two names equal on a case-insensitive
    file system; files are created exclusively) stops the extraction, and what was
    written is removed again.

    The owner's executable bit is restored (as ``chmod +x`` within the read bits); other
    permission bits and timestamps come from the process's umask and clock.
    """
    limit_bytes, limit_files = resolve_limits(max_bytes, max_files)
    target = Path(target_dir)
    existed = target.exists() or target.is_symlink()
    if existed:
        if not target.is_dir():
            raise SnapshotError(f"target_dir {target} is not a directory")
        if any(target.iterdir()):
            raise SnapshotError(f"target_dir {target} is not empty")
    try:
        archive = zipfile.ZipFile(zip_path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise SnapshotError(f"cannot open the snapshot {zip_path}: {exc}") from exc
    with archive:
        real_target = target.resolve()
        entries = _check_entries(archive.infolist(), real_target, limit_bytes, limit_files)
        written: list[str] = []
        total = 0
        try:
            target.mkdir(parents=True, exist_ok=True)
            for info, name, is_dir in entries:
                dest = real_target / name
                if is_dir:
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                length = 0
                with archive.open(info) as src, open(dest, "xb") as dst:
                    while chunk := src.read(CHUNK_BYTES):
                        length += len(chunk)
                        total += len(chunk)
                        if length > info.file_size or total > limit_bytes:
                            raise SnapshotError(
                                f"snapshot entry {name!r} holds more bytes than it declared"
                            )
                        dst.write(chunk)
                mode = info.external_attr >> 16
                if mode & stat.S_IXUSR:
                    current = dest.stat().st_mode
                    dest.chmod(current | (current & 0o444) >> 2)
                written.append(name)
        except BaseException as exc:
            _clear(target, created=not existed)
            if isinstance(exc, OSError | zipfile.BadZipFile | zlib.error | EOFError):
                raise SnapshotError(f"cannot extract the snapshot {zip_path}: {exc}") from exc
            raise
    return sorted(written)
