"""Source snapshots (producer/_snapshot.py): gitignore rules, collecting under limits, the
deterministic zip, and an extraction that refuses hostile archives.

The gitignore table is also checked against ``git check-ignore`` when git is installed, so
the expectations are git's, not ours.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import subprocess
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from producer import _snapshot
from producer._errors import ConfigError
from producer._snapshot import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_FILES,
    IgnoreRules,
    SnapshotError,
    build_snapshot,
    collect_files,
    extract_snapshot,
    resolve_limits,
)

# ---- gitignore rules ------------------------------------------------------------------------

#: (ignore file text, path, is a directory, ignored)
GITIGNORE_CASES: list[tuple[str, str, bool, bool]] = [
    # a pattern without a slash matches the name at any depth
    ("foo", "foo", False, True),
    ("foo", "a/b/foo", False, True),
    ("foo", "a/foo", True, True),
    ("foo", "foobar", False, False),
    ("foo", "foo/bar.txt", False, True),  # inside an ignored directory
    # a leading or middle slash anchors to the root
    ("/foo", "foo", False, True),
    ("/foo", "a/foo", False, False),
    ("a/foo", "a/foo", False, True),
    ("a/foo", "x/a/foo", False, False),
    ("/a/foo", "a/foo", False, True),
    # a trailing slash: directories only
    ("foo/", "foo", True, True),
    ("foo/", "foo", False, False),
    ("foo/", "a/foo", True, True),
    ("foo/", "foo/x.txt", False, True),
    ("/build/", "build", True, True),
    ("/build/", "src/build", True, False),
    ("doc/frotz/", "doc/frotz", True, True),
    ("doc/frotz/", "a/doc/frotz", True, False),
    ("doc/frotz/", "doc/frotz", False, False),
    # * and ? do not cross '/'
    ("*.log", "a/b/x.log", False, True),
    ("*.log", "x.log.txt", False, False),
    ("a/*.txt", "a/x.txt", False, True),
    ("a/*.txt", "a/b/x.txt", False, False),
    ("?.txt", "a.txt", False, True),
    ("?.txt", "ab.txt", False, False),
    ("?.txt", ".txt", False, False),
    ("x/a?b", "x/a/b", False, False),
    ("*", "a/b", False, True),
    # classes
    ("[abc].txt", "b.txt", False, True),
    ("[abc].txt", "d.txt", False, False),
    ("[!abc].txt", "d.txt", False, True),
    ("[!abc].txt", "a.txt", False, False),
    ("[^a].txt", "b.txt", False, True),
    ("[a-c]x", "bx", False, True),
    ("[a-c]x", "dx", False, False),
    ("[]]x", "]x", False, True),
    ("[a-]x", "-x", False, True),
    ("[[:digit:]]*.csv", "7days.csv", False, True),
    ("[[:digit:]]*.csv", "days.csv", False, False),
    ("[[:upper:]][[:lower:]]", "Ab", False, True),
    ("a[/]b", "a/b", False, False),  # a class never matches '/'
    ("a[!x]b", "a/b", False, False),
    ("file[", "file[", False, False),  # unterminated: the pattern matches nothing
    ("[[:nope:]]", "n", False, False),  # unknown class: the pattern matches nothing
    # ** crossing directories
    ("**/foo", "foo", False, True),
    ("**/foo", "a/b/foo", False, True),
    ("**/foo/bar", "foo/bar", False, True),
    ("**/foo/bar", "x/y/foo/bar", False, True),
    ("**/foo/bar", "foo/x/bar", False, False),
    ("a/**", "a/x", False, True),
    ("a/**", "a/x/y", False, True),
    ("a/**", "a", True, False),
    ("a/**", "b/a/x", False, False),
    ("a/**/b", "a/b", False, True),
    ("a/**/b", "a/x/b", False, True),
    ("a/**/b", "a/x/y/b", False, True),
    ("a/**/b", "x/a/b", False, False),
    ("x**y", "xaby", False, True),  # ** not at a slash is *
    ("a/x**y", "a/x/y", False, False),
    # negation; the last matching rule wins
    ("*.log\n!keep.log", "keep.log", False, False),
    ("*.log\n!keep.log", "a.log", False, True),
    ("!keep.log\n*.log", "keep.log", False, True),
    ("logs/\n!logs/", "logs/x", False, False),
    # a file in an excluded directory cannot be re-included...
    ("build/\n!build/keep.txt", "build/keep.txt", False, True),
    ("build\n!build/keep.txt", "build/keep.txt", False, True),
    # ...but one in a directory whose contents (not itself) are excluded can
    ("build/*\n!build/keep.txt", "build/keep.txt", False, False),
    ("build/*\n!build/keep.txt", "build/other.txt", False, True),
    ("build/**\n!build/keep.txt", "build/keep.txt", False, False),
    ("/*\n!/src\n/src/*\n!/src/main.py", "src/main.py", False, False),
    ("/*\n!/src\n/src/*\n!/src/main.py", "src/other.py", False, True),
    ("/*\n!/src\n/src/*\n!/src/main.py", "readme.md", False, True),
    ("*\n!*/\n!*.py", "a/b.py", False, False),
    ("*\n!*/\n!*.py", "a/b.txt", False, True),
    # comments, blank lines, escapes, spaces
    ("\n\n# comment\n", "comment", False, False),
    ("#notes", "#notes", False, False),
    ("\\#notes", "#notes", False, True),
    ("!important", "!important", False, False),
    ("\\!important", "!important", False, True),
    ("\\*.txt", "*.txt", False, True),
    ("\\*.txt", "a.txt", False, False),
    ("foo   ", "foo", False, True),
    ("foo\\ ", "foo ", False, True),
    ("foo\\ ", "foo", False, False),
    (" foo", " foo", False, True),
    (" foo", "foo", False, False),
    ("foo\r\nbar\r\n", "bar", False, True),
    ("\ufefffoo", "foo", False, True),
    ("/", "foo", False, False),
    ("café/", "café/menu.txt", False, True),
]


def _case_id(case: tuple[str, str, bool, bool]) -> str:
    rules, path, is_dir, ignored = case
    return f"{rules!r} {path!r}{'/' if is_dir else ''} {'ignored' if ignored else 'kept'}"


@pytest.mark.parametrize("case", GITIGNORE_CASES, ids=_case_id)
def test_gitignore_rules(case: tuple[str, str, bool, bool]) -> None:
    rules, path, is_dir, ignored = case
    assert IgnoreRules.parse(rules).is_ignored(path, is_dir=is_dir) is ignored


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(repo),
        "XDG_CONFIG_HOME": str(repo / ".config"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "LC_ALL": "C.UTF-8",
    }
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=False
    )


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_the_gitignore_table_is_what_git_says(tmp_path: Path) -> None:
    disagreements = []
    for number, (rules, path, is_dir, ignored) in enumerate(GITIGNORE_CASES):
        repo = tmp_path / str(number)
        repo.mkdir()
        assert _git(repo, "init", "-q").returncode == 0
        (repo / ".gitignore").write_bytes(rules.encode())
        target = repo / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if is_dir:
            target.mkdir()
        else:
            target.write_text("x")
        answer = _git(repo, "check-ignore", "--no-index", "-q", "--", path)
        assert answer.returncode in (0, 1), answer.stderr
        if (answer.returncode == 0) is not ignored:
            disagreements.append(_case_id((rules, path, is_dir, ignored)))
    assert disagreements == []


def _tree(root: Path, files: Mapping[str, bytes | str]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        path.write_bytes(content)
    return root


def test_amlignore_beats_gitignore(tmp_path: Path) -> None:
    _tree(tmp_path, {".gitignore": "*.txt\n", ".amlignore": "*.csv\n"})
    rules = IgnoreRules.for_directory(tmp_path)
    assert rules.source == tmp_path / ".amlignore"
    assert rules.is_ignored("a.csv")
    assert not rules.is_ignored("a.txt")


def test_gitignore_is_read_without_amlignore(tmp_path: Path) -> None:
    _tree(tmp_path, {".gitignore": "*.txt\n"})
    rules = IgnoreRules.for_directory(tmp_path)
    assert rules.source == tmp_path / ".gitignore"
    assert rules.is_ignored("a.txt")


def test_no_ignore_file_ignores_nothing(tmp_path: Path) -> None:
    (tmp_path / ".amlignore").mkdir()  # not a file: not an ignore file
    rules = IgnoreRules.for_directory(tmp_path)
    assert rules.source is None
    assert not rules.is_ignored("anything", is_dir=True)


# ---- collecting -----------------------------------------------------------------------------


def _names(source: Path, **limits: int) -> list[str]:
    return [f.name for f in collect_files(source, **limits)]


def test_collect_applies_the_root_ignore_file_only(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            ".amlignore": "data/\n*.ckpt\n!keep.ckpt\n",
            "train.py": "print()",
            "data/big.csv": "1,2",
            "src/data/also.csv": "3",  # data/ matches at any depth
            "model.ckpt": "w",
            "keep.ckpt": "w",
            "src/.gitignore": "*.py\n",  # nested ignore files are not read
            "src/util.py": "x = 1",
        },
    )
    assert _names(tmp_path) == [
        ".amlignore",
        "keep.ckpt",
        "src/.gitignore",
        "src/util.py",
        "train.py",
    ]


def test_ignored_directories_are_not_entered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tree(tmp_path, {".amlignore": "venv/\n", "venv/lib/x.py": "", "a/b.py": ""})
    listed: list[str] = []
    scandir = os.scandir

    def recording_scandir(path: str | os.PathLike[str]) -> Any:
        listed.append(os.path.relpath(path, tmp_path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", recording_scandir)
    assert _names(tmp_path) == [".amlignore", "a/b.py"]
    assert sorted(listed) == [".", "a"]


def test_the_ignore_file_is_left_out_only_by_its_own_rules(tmp_path: Path) -> None:
    _tree(tmp_path, {".amlignore": ".amlignore\n", ".gitignore": "", "a.py": ""})
    assert _names(tmp_path) == [".gitignore", "a.py"]


def test_git_directories_and_files_are_always_left_out(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            ".gitignore": "!.git\n!.git/\n",
            ".git/config": "[core]",
            "sub/.git": "gitdir: ../.git/modules/sub",
            "sub/a.py": "",
            ".github/ci.yml": "",
        },
    )
    assert _names(tmp_path) == [".github/ci.yml", ".gitignore", "sub/a.py"]


def test_symlinks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = _tree(tmp_path / "src", {"real.txt": "inside", "pkg/mod.py": "m"})
    outside = _tree(tmp_path / "elsewhere", {"secret.txt": "outside"})
    (source / "link.txt").symlink_to("real.txt")
    (source / "up.txt").symlink_to(outside / "secret.txt")
    (source / "pkgdir").symlink_to("pkg", target_is_directory=True)
    (source / "loop").symlink_to(source, target_is_directory=True)
    (source / "dangling").symlink_to("missing.txt")
    with caplog.at_level(logging.WARNING, logger="producer._snapshot"):
        files = collect_files(source)
    assert [f.name for f in files] == ["link.txt", "pkg/mod.py", "real.txt"]
    link = files[0]
    assert link.path == (source / "real.txt").resolve()
    assert link.size == len("inside")
    warned = " ".join(r.getMessage() for r in caplog.records)
    for name in ("up.txt", "pkgdir", "loop", "dangling"):
        assert f"skipping symlink {name}:" in warned


def test_special_files_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _tree(tmp_path, {"a.py": ""})
    os.mkfifo(tmp_path / "pipe")
    with caplog.at_level(logging.WARNING, logger="producer._snapshot"):
        assert _names(tmp_path) == ["a.py"]
    assert "skipping pipe: not a regular file" in caplog.text


def test_source_directory_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="does not exist"):
        collect_files(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(SnapshotError, match="is not a directory"):
        build_snapshot(tmp_path / "file")


def test_a_name_a_zip_cannot_hold_is_refused(tmp_path: Path) -> None:
    _tree(tmp_path, {"ok.py": "", "win\\path.py": ""})
    with pytest.raises(SnapshotError, match=r"win\\\\path\.py.*backslash"):
        collect_files(tmp_path)
    (tmp_path / ".amlignore").write_text("win*\n")  # unless it is ignored
    assert _names(tmp_path) == [".amlignore", "ok.py"]


# ---- limits -------------------------------------------------------------------------------


@pytest.fixture
def no_limit_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNSTREAM_SNAPSHOT_MAX_BYTES", raising=False)
    monkeypatch.delenv("RUNSTREAM_SNAPSHOT_MAX_FILES", raising=False)


@pytest.fixture
def reading_forbidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any file opened by the snapshot module fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a file was opened: {args}")

    monkeypatch.setattr(_snapshot, "open", refuse, raising=False)


@pytest.mark.usefixtures("no_limit_env")
def test_default_limits() -> None:
    assert DEFAULT_MAX_BYTES == 300 * 2**20
    assert DEFAULT_MAX_FILES == 2000
    assert resolve_limits() == (DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES)
    assert resolve_limits(10, 20) == (10, 20)


def test_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNSTREAM_SNAPSHOT_MAX_BYTES", "1000")
    monkeypatch.setenv("RUNSTREAM_SNAPSHOT_MAX_FILES", " 7 ")
    assert resolve_limits() == (1000, 7)
    assert resolve_limits(max_files=9) == (1000, 9)  # an argument beats the environment
    monkeypatch.setenv("RUNSTREAM_SNAPSHOT_MAX_FILES", "many")
    with pytest.raises(ConfigError, match="RUNSTREAM_SNAPSHOT_MAX_FILES"):
        resolve_limits()
    monkeypatch.setenv("RUNSTREAM_SNAPSHOT_MAX_FILES", "0")
    with pytest.raises(ConfigError, match="RUNSTREAM_SNAPSHOT_MAX_FILES: must be at least 1"):
        resolve_limits()
    with pytest.raises(ValueError, match="max_bytes must be at least 1"):
        resolve_limits(max_bytes=0, max_files=1)


@pytest.mark.usefixtures("no_limit_env", "reading_forbidden")
def test_too_many_files_is_refused_before_reading(tmp_path: Path) -> None:
    source = _tree(tmp_path / "x", {f"data/{i}.csv": "1" for i in range(5)} | {"run.py": ""})
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(SnapshotError) as raised:
        build_snapshot(source, max_files=4, work_dir=work)
    message = str(raised.value)
    assert f"source_directory {source} has 6 files, over the 4-file snapshot limit" in message
    assert f"add the ones the run does not need to {source / '.amlignore'} (gitignore" in message
    assert "RUNSTREAM_SNAPSHOT_MAX_FILES=6 (or max_files=)" in message
    assert "Largest entries: data/ (5 files, " in message
    assert list(work.iterdir()) == []


@pytest.mark.usefixtures("reading_forbidden")
def test_too_many_bytes_is_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNSTREAM_SNAPSHOT_MAX_BYTES", str(2**20))
    source = _tree(tmp_path / "x", {".gitignore": "", "weights.bin": b"\0" * (3 * 2**19)})
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(SnapshotError) as raised:
        build_snapshot(source, work_dir=work)
    message = str(raised.value)
    assert (
        "has 1.5 MB (1,572,864 bytes), over the 1.0 MB (1,048,576 bytes) snapshot limit" in message
    )
    assert f"to {source / '.gitignore'} (gitignore syntax)" in message
    assert f"(or create {source / '.amlignore'}, which is then read instead)" in message
    assert "RUNSTREAM_SNAPSHOT_MAX_BYTES=1572864 (or max_bytes=)" in message
    assert list(work.iterdir()) == []


@pytest.mark.usefixtures("no_limit_env")
def test_exactly_at_the_limits_is_accepted(tmp_path: Path) -> None:
    source = _tree(tmp_path, {"a": "12345", "b": "67890"})
    assert _names(source, max_files=2, max_bytes=10) == ["a", "b"]
    with pytest.raises(SnapshotError, match="has 10 bytes, over the 9 bytes snapshot limit"):
        collect_files(source, max_files=2, max_bytes=9)


# ---- building -----------------------------------------------------------------------------

PROJECT: dict[str, bytes | str] = {
    ".amlignore": "outputs/\n*.pyc\n",
    "train.py": "import os\nprint('train')\n",
    "pkg/__init__.py": "",
    "pkg/model.py": "W = [1, 2, 3]\n" * 200,
    "pkg/model.pyc": b"\x00compiled",
    "outputs/old.txt": "stale",
    "data/values.bin": bytes(range(256)) * 64,
    "run.sh": "#!/bin/sh\nexec python train.py\n",
    "data dir/with spaces.txt": "spaces",
    "données/résumé ünïcode 名前.txt": "unicode",
}
KEPT = sorted(
    name for name in PROJECT if not name.startswith("outputs/") and not name.endswith(".pyc")
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = _tree(tmp_path / "project", PROJECT)
    (root / "run.sh").chmod(0o755)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return root


@pytest.fixture
def build(tmp_path: Path) -> Callable[[Path], _snapshot.Snapshot]:
    work = tmp_path / "work"
    work.mkdir()

    def make(source: Path) -> _snapshot.Snapshot:
        return build_snapshot(source, max_bytes=10 * 2**20, max_files=100, work_dir=work)

    return make


def test_the_zip_is_described_truthfully(
    project: Path, build: Callable[[Path], _snapshot.Snapshot]
) -> None:
    with build(project) as snapshot:
        data = snapshot.path.read_bytes()
        assert snapshot.sha256 == hashlib.sha256(data).hexdigest()
        assert snapshot.size == len(data)
        assert snapshot.names == tuple(KEPT)
        assert snapshot.file_count == len(KEPT)
        assert snapshot.ignore_file == project / ".amlignore"
        expected_bytes = sum((project / name).stat().st_size for name in KEPT)
        assert snapshot.content_bytes == expected_bytes
        with zipfile.ZipFile(snapshot.path) as archive:
            assert archive.testzip() is None
            infos = archive.infolist()
        assert [info.filename for info in infos] == KEPT
        for info in infos:
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.compress_type == zipfile.ZIP_DEFLATED
            assert info.extra == b""
            mode = 0o755 if info.filename == "run.sh" else 0o644
            assert info.external_attr >> 16 == stat.S_IFREG | mode
    assert not snapshot.path.exists()  # the context manager discards it


def test_the_zip_is_deterministic(
    tmp_path: Path, project: Path, build: Callable[[Path], _snapshot.Snapshot]
) -> None:
    first = build(project)
    second = build(project)
    assert first.path != second.path
    assert first.path.read_bytes() == second.path.read_bytes()

    for path in project.rglob("*"):
        os.utime(path, (1_000_000_000, 1_500_000_000))
    (project / "train.py").chmod(0o600)  # no executable bit: same entry
    assert build(project).sha256 == first.sha256

    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(project, moved, symlinks=True)
    assert build(moved).sha256 == first.sha256  # a content address, not a place

    (moved / "outputs" / "new.txt").write_text("ignored files change nothing")
    assert build(moved).sha256 == first.sha256

    (project / "pkg" / "model.py").write_text("W = [1, 2, 4]\n" * 200)
    assert build(project).sha256 != first.sha256
    (project / "pkg" / "model.py").write_text("W = [1, 2, 3]\n" * 200)
    assert build(project).sha256 == first.sha256
    (project / "train.py").chmod(0o700)  # the executable bit is content
    assert build(project).sha256 != first.sha256


def test_build_round_trips_through_extract(
    tmp_path: Path, project: Path, build: Callable[[Path], _snapshot.Snapshot]
) -> None:
    target = tmp_path / "agent" / "run-1"
    with build(project) as snapshot:
        assert extract_snapshot(snapshot.path, target) == KEPT
    extracted = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert extracted == KEPT
    for name in KEPT:
        assert (target / name).read_bytes() == (project / name).read_bytes(), name
    assert (target / "run.sh").stat().st_mode & stat.S_IXUSR
    assert not (target / "train.py").stat().st_mode & stat.S_IXUSR
    assert not (target / ".git").exists()


def test_a_symlinked_file_is_stored_as_its_content(
    tmp_path: Path, build: Callable[[Path], _snapshot.Snapshot]
) -> None:
    source = _tree(tmp_path / "src", {"conf/base.yaml": "lr: 0.1\n"})
    (source / "config.yaml").symlink_to("conf/base.yaml")
    target = tmp_path / "out"
    with build(source) as snapshot:
        extract_snapshot(snapshot.path, target)
    assert not (target / "config.yaml").is_symlink()
    assert (target / "config.yaml").read_text() == "lr: 0.1\n"


def test_a_failed_build_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, build: Callable[[Path], _snapshot.Snapshot]
) -> None:
    source = _tree(tmp_path / "src", {"a.txt": "a", "b.txt": "b"})

    def fail(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_snapshot, "_zip_info", fail)
    with pytest.raises(SnapshotError, match="No space left on device"):
        build(source)
    assert list((tmp_path / "work").iterdir()) == []


# ---- extracting ---------------------------------------------------------------------------


def _zip(path: Path, *entries: zipfile.ZipInfo | str, content: bytes = b"data") -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(path, "w") as archive:
            for entry in entries:
                archive.writestr(entry, content)
    return path


def _symlink_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _nul_zip(path: Path) -> Path:
    _zip(path, "ok.txt", "evilX.txt")
    data = path.read_bytes()
    assert data.count(b"evilX.txt") == 2  # local header and central directory
    path.write_bytes(data.replace(b"evilX.txt", b"evil\0.txt"))
    return path


@pytest.fixture
def zone(tmp_path: Path) -> Path:
    """An empty place holding the (not yet existing) target directory, to see that a
    hostile entry writes nothing next to it either."""
    place = tmp_path / "zone"
    place.mkdir()
    return place


HOSTILE: dict[str, Callable[[Path, Path], Path]] = {
    "absolute path": lambda path, zone: _zip(path, "ok.txt", str(zone / "abs.txt")),
    "parent": lambda path, zone: _zip(path, "ok.txt", "../x.txt"),
    "parent in the middle": lambda path, zone: _zip(path, "ok.txt", "a/../../x.txt"),
    "backslash": lambda path, zone: _zip(path, "ok.txt", "..\\x.txt"),
    "drive letter": lambda path, zone: _zip(path, "ok.txt", "C:/x.txt"),
    "dot component": lambda path, zone: _zip(path, "ok.txt", "./x.txt"),
    "empty component": lambda path, zone: _zip(path, "ok.txt", "a//x.txt"),
    "symlink": lambda path, zone: _zip(path, "ok.txt", _symlink_entry("link")),
    "duplicate": lambda path, zone: _zip(path, "ok.txt", "x.txt", "x.txt"),
    "file and directory": lambda path, zone: _zip(path, "ok.txt", "x", "x/y"),
    "NUL": lambda path, zone: _nul_zip(path),
}
HOSTILE_MESSAGES = {
    "absolute path": "absolute path",
    "parent": "'.' or '..' component",
    "parent in the middle": "'.' or '..' component",
    "backslash": "backslash",
    "drive letter": "drive letter",
    "dot component": "'.' or '..' component",
    "empty component": "empty, '.' or '..' component",
    "symlink": "symlink",
    "duplicate": "in the archive twice",
    "file and directory": "both a file and a directory",
    "NUL": "NUL character",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_zips_are_refused_before_anything_is_written(
    tmp_path: Path, zone: Path, kind: str
) -> None:
    archive = HOSTILE[kind](tmp_path / "hostile.zip", zone)
    target = zone / "target"
    with pytest.raises(SnapshotError, match=r"unsafe snapshot entry .*" + HOSTILE_MESSAGES[kind]):
        extract_snapshot(archive, target)
    assert list(zone.iterdir()) == []  # not even ok.txt, nor the target directory
    assert not (tmp_path / "x.txt").exists()


def test_declared_sizes_over_the_limit_are_refused(tmp_path: Path, zone: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as out:
        for i in range(3):
            out.writestr(f"zeros{i}", b"\0" * 2**20)
    assert archive.stat().st_size < 2**16
    with pytest.raises(
        SnapshotError,
        match=r"unpacks to 3\.0 MB \(3,145,728 bytes\), over the 2\.0 MB \(2,097,152 bytes\)",
    ):
        extract_snapshot(archive, zone / "t", max_bytes=2 * 2**20)
    with pytest.raises(SnapshotError, match="3 files, over the 2-file limit"):
        extract_snapshot(archive, zone / "t", max_files=2)
    assert list(zone.iterdir()) == []


def test_an_entry_longer_than_declared_is_not_written(tmp_path: Path, zone: Path) -> None:
    archive = _zip(tmp_path / "liar.zip", "first.txt", "liar.txt", content=b"A" * 1000)
    data = bytearray(archive.read_bytes())
    # Declare 10 bytes for liar.txt in its local header (30 bytes before its name, size at
    # offset 22) and in its central directory record (46 bytes before, size at offset 24).
    local = data.index(b"liar.txt") - 30
    central = data.rindex(b"liar.txt") - 46
    assert data[local : local + 4] == b"PK\x03\x04"
    assert data[central : central + 4] == b"PK\x01\x02"
    data[local + 22 : local + 26] = (10).to_bytes(4, "little")
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    target = zone / "t"
    with pytest.raises(SnapshotError, match="cannot extract the snapshot"):
        extract_snapshot(archive, target)
    assert list(zone.iterdir()) == []  # first.txt was removed again with the target


def test_the_target_must_be_empty_or_absent(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "ok.zip", "a.txt")
    target = tmp_path / "target"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(SnapshotError, match="is not empty"):
        extract_snapshot(archive, target)
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    with pytest.raises(SnapshotError, match="is not a directory"):
        extract_snapshot(archive, target / "old.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert extract_snapshot(archive, empty) == ["a.txt"]


def test_directory_entries_are_accepted(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "dirs.zip", "pkg/", "pkg/a.py", "empty/")
    target = tmp_path / "t"
    assert extract_snapshot(archive, target) == ["pkg/a.py"]
    assert (target / "empty").is_dir()
    assert (target / "pkg" / "a.py").read_bytes() == b"data"


def test_a_file_that_is_not_a_zip_is_refused(tmp_path: Path) -> None:
    (tmp_path / "not.zip").write_text("hello")
    with pytest.raises(SnapshotError, match="cannot open the snapshot"):
        extract_snapshot(tmp_path / "not.zip", tmp_path / "t")
    assert not (tmp_path / "t").exists()
