"""How handles show in a notebook: one-row HTML tables with links, as Azure ML draws them."""

from __future__ import annotations

import html
from collections.abc import Mapping

__all__ = ["DOCS_URL", "html_table", "link"]

#: Where a handle's "Docs Page" link points: the project's README.
DOCS_URL = "https://pypi.org/project/runstream/"


class Link:
    """A cell that is a link (escaped when drawn)."""

    def __init__(self, url: str, text: str) -> None:
        self.url = url
        self.text = text


def link(url: str, text: str) -> Link:
    return Link(url, text)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, Link):
        return (
            f'<a href="{html.escape(value.url)}" target="_blank" rel="noopener">'
            f"{html.escape(value.text)}</a>"
        )
    return html.escape(str(value))


def html_table(row: Mapping[str, object]) -> str:
    """A header row and one data row, as Azure ML's ``_repr_html_`` draws a handle."""
    head = "".join(f"<th>{html.escape(k)}</th>" for k in row)
    cells = "".join(f"<td>{_cell(v)}</td>" for v in row.values())
    return f'<table style="width:100%"><tr>{head}</tr><tr>{cells}</tr></table>'
