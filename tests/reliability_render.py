"""RELIABILITY.md's figures, rendered from a recorded run.

    python -m tests.reliability_render RUN.json [RERUN.json ...] RELIABILITY.md

``RUN.json`` is what ``tests/reliability.py`` writes at the end of a pytest session
(``RUNSTREAM_RELIABILITY_JSON``). Only the part of the document between :data:`BEGIN`
and :data:`END` is rewritten; the hand-written text around it stays as it is.

The generated part is a header line (date, commit, machine, storage, duration) and one
table per section, one row per record: its wording (guarantee, faults, notes) comes
from the record, so a new test adds a row by recording. A test that did not run (skipped,
deselected, failed before it recorded) gets a row that says so, with its guarantee's
wording taken from the previous rendering when there was one — never its old numbers.

A test re-run alone (``RUNSTREAM_RELIABILITY_JSON=rerun.json pytest NODEID``) is folded
in by naming its JSON after the run's: its rows replace the run's rows for that test, and
the header says when it was re-run.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.reliability import BAD_INPUT, LOSS

__all__ = ["BEGIN", "END", "Row", "main", "merge", "previous_wording", "render", "rows",
           "update"]

BEGIN = "<!-- figures:begin -->"
END = "<!-- figures:end -->"
COLUMNS = ("guarantee", "test", "faults injected", "events / points", "lost", "doubled",
           "storage", "took", "notes")
DEFAULT_SECTION = LOSS
#: Sections in this order first; any other in order of first appearance.
SECTION_ORDER = (LOSS, BAD_INPUT)
DASH = "—"
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


@dataclass(frozen=True)
class Row:
    section: str
    guarantee: str
    test: str
    faults: str
    amount: str
    lost: str
    doubled: str
    storage: str
    took: str
    notes: str

    def cells(self) -> tuple[str, ...]:
        return (self.guarantee, f"`{self.test}`", self.faults, self.amount, self.lost,
                self.doubled, self.storage, self.took, self.notes)


def display(nodeid: str) -> str:
    """How a test is named in the tables (integration tests without their folder)."""
    return nodeid.removeprefix("tests/integration/")


def _num(value: Any) -> str:
    if value is None:
        return DASH
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return str(value)


def _amount(record: Mapping[str, Any]) -> str:
    parts = [f"{_num(record[k])} {k}" for k in ("events", "points") if record.get(k) is not None]
    return " / ".join(parts) or DASH


def _humanize(nodeid: str) -> str:
    name = nodeid.rsplit("::", 1)[-1].split("[", 1)[0].removeprefix("test_")
    return name.replace("_", " ")


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _not_run(test: Mapping[str, Any]) -> str:
    outcome, phase, reason = test.get("outcome"), test.get("phase"), test.get("reason")
    if outcome == "failed":
        return f"**failed** in {phase} before it recorded anything"
    if outcome == "skipped":
        return f"**not run** (skipped: {reason})" if reason else "**not run** (skipped)"
    if outcome == "deselected":
        return "**not run** (deselected)"
    if outcome == "passed":
        return "passed without recording figures"
    return "**not run**"


def rows(run: Mapping[str, Any],
         previous: Mapping[str, tuple[str, str]] | None = None) -> list[Row]:
    """One row per record; one row per test that has none (saying why)."""
    previous = previous or {}
    out: list[Row] = []
    for test in run.get("tests", []):
        name = display(str(test["nodeid"]))
        records = test.get("records") or []
        took = _duration(float(test.get("duration_s") or 0))
        if test.get("rerun"):
            took += " (re-run)"
        if not records:
            section, guarantee = previous.get(name, (DEFAULT_SECTION, _humanize(name)))
            out.append(Row(section, guarantee, name, _not_run(test), DASH, DASH, DASH, DASH,
                           DASH, DASH))
            continue
        failed = test.get("outcome") != "passed"
        for rec in records:
            notes = [str(rec.get("notes") or "").strip()]
            if failed:
                where = f" in {test.get('phase')}" if test.get("phase") else ""
                notes.insert(0, f"**{test.get('outcome')}{where}**: these are the figures it "
                                f"counted, not a proof")
            out.append(Row(
                section=str(rec.get("section") or DEFAULT_SECTION),
                guarantee=str(rec.get("guarantee") or _humanize(name)), test=name,
                faults=str(rec.get("faults") or DASH), amount=_amount(rec),
                lost=_num(rec.get("lost")), doubled=_num(rec.get("doubled")),
                storage=str(rec.get("storage") or DASH), took=took,
                notes="; ".join(n for n in notes if n)))
    return out


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|") or DASH


def _table(section_rows: Sequence[Row]) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row.cells()) + " |" for row in section_rows]
    return lines


def _when(started: str | None) -> str:
    return (datetime.fromisoformat(started).strftime("%Y-%m-%d %H:%M UTC")
            if started else "an unknown date")


def _commit(git: Mapping[str, Any] | None) -> str:
    git = git or {}
    commit = f"commit `{git.get('commit') or 'unknown'}`"
    if git.get("dirty"):
        commit += " (the working tree had uncommitted changes)"
    return commit


def header(run: Mapping[str, Any]) -> str:
    when, commit = _when(run.get("started_at")), _commit(run.get("git"))
    machine = run.get("machine") or {}
    ram = machine.get("ram_bytes")
    box = f"{machine.get('cores', '?')} cores, " + (f"{ram / 2**30:.1f} GiB RAM" if ram
                                                     else "RAM unknown")
    stack = run.get("stack") or {}
    if stack.get("postgres_mode") == "timescaledb":
        storage = f"PostgreSQL server with TimescaleDB {stack.get('timescaledb') or ''}".rstrip()
    elif stack.get("postgres_mode"):
        storage = f"plain PostgreSQL server ({stack['postgres_mode']})"
    else:
        storage = "PostgreSQL server (storage mode unknown)"
    tests = run.get("tests", [])
    outcomes: dict[str, int] = {}
    for test in tests:
        outcomes[test.get("outcome", "not run")] = outcomes.get(test.get("outcome",
                                                                         "not run"), 0) + 1
    tally = ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items()))
    totals = []
    for key in ("events", "points"):  # lost/doubled only make sense per row (drops)
        values = [r.get(key) for t in tests for r in t.get("records") or []]
        numbers = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
        if numbers:
            totals.append(f"{sum(numbers):,} {key}")
    parts = [f"Last run: **{when}**", commit, box, storage,
             f"{len(tests)} tests: {tally or 'none'}, in "
             f"{_duration(float(run.get('duration_s') or 0))}"]
    parts += [f"re-run of {r.get('tests', 0)} test(s): {_when(r.get('started_at'))}, "
              f"{_commit(r.get('git'))}, {_duration(float(r.get('duration_s') or 0))}"
              for r in run.get("reruns", [])]
    if totals:
        parts.append(f"in all {', '.join(totals)}")
    return " · ".join(parts) + "."


def merge(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The first run, with each later run's tests (those that ran) in place of its own."""
    merged = dict(runs[0])
    tests = {t["nodeid"]: t for t in runs[0].get("tests", [])}
    reruns = list(merged.get("reruns", []))
    for later in runs[1:]:
        ran = [t for t in later.get("tests", []) if t.get("outcome") not in ("deselected",
                                                                             "not run")]
        tests.update((t["nodeid"], {**t, "rerun": True}) for t in ran)
        reruns.append({"started_at": later.get("started_at"), "git": later.get("git"),
                       "duration_s": later.get("duration_s"), "tests": len(ran)})
    merged["tests"], merged["reruns"] = list(tests.values()), reruns
    return merged


def render(run: Mapping[str, Any], previous_block: str = "") -> str:
    """The generated part (between the markers, markers excluded)."""
    all_rows = rows(run, previous_wording(previous_block))
    lines = ["", "<!-- Generated by `make reliability` (tests/reliability_render.py) from the "
                 "run's JSON: edit outside the markers only. -->", "",
             header(run)]
    sections: dict[str, list[Row]] = {name: [] for name in SECTION_ORDER}
    for row in all_rows:
        sections.setdefault(row.section, []).append(row)
    for section, section_rows in sections.items():
        if section_rows:
            lines += ["", f"### {section}", "", *_table(section_rows)]
    return "\n".join([*lines, ""])


def previous_wording(block: str) -> dict[str, tuple[str, str]]:
    """(section, guarantee) per test, from an earlier rendering."""
    found: dict[str, tuple[str, str]] = {}
    section = DEFAULT_SECTION
    for line in block.splitlines():
        if line.startswith("### "):
            section = line[4:].strip()
        elif line.startswith("|") and not line.startswith(("|---", "| guarantee |")):
            cells = [c.strip() for c in _CELL_SPLIT.split(line.strip().strip("|"))]
            if len(cells) >= 2 and cells[1].startswith("`"):
                found.setdefault(cells[1].strip("`"), (section, cells[0].replace("\\|", "|")))
    return found


def update(document: str, run: Mapping[str, Any]) -> str:
    """``document`` with its generated part replaced."""
    start, end = document.find(BEGIN), document.find(END)
    if start < 0 or end < 0 or end < start or document.count(BEGIN) != 1:
        raise ValueError(f"the document needs one {BEGIN} followed by one {END}")
    inner = document[start + len(BEGIN):end]
    return document[:start + len(BEGIN)] + render(run, inner) + document[end:]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print("usage: python -m tests.reliability_render RUN.json [RERUN.json ...] "
              "RELIABILITY.md", file=sys.stderr)
        return 2
    *sources, target = (Path(a) for a in args)
    run = merge([json.loads(source.read_text()) for source in sources])
    target.write_text(update(target.read_text(), run))
    print(f"{target}: figures of {len(run['tests'])} tests from {', '.join(args[:-1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
