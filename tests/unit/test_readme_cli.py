"""The README's "Commands" line names exactly the `runstream` subcommands and the options
it shows, as the parser defines them (issue 15, item 9). The `status --json` sample is
checked against a real stack in tests/integration/test_stack.py."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from ingest.cli.main import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def commands_line() -> str:
    text = README.read_text()
    section = text[text.index("## Commands"):]
    match = re.search(r"^`runstream (.+?)`$", section, re.MULTILINE)
    assert match, "the Commands section has no `runstream …` line"
    return match.group(1)


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_the_commands_line_names_every_subcommand_and_only_those() -> None:
    shown = [part.split()[0] for part in commands_line().split(" | ")]
    assert sorted(shown) == sorted(subcommands())


def test_the_options_the_commands_line_shows_exist() -> None:
    parsers = subcommands()
    for part in commands_line().split(" | "):
        name, *rest = part.split(maxsplit=1)
        options = re.findall(r"--[a-z][a-z-]*", rest[0]) if rest else []
        known = {o for a in parsers[name]._actions for o in a.option_strings}
        assert set(options) <= known, (name, options)
