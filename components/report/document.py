"""The report's tiny document model: a page is sections of blocks (`Text`, `Table`, `Pre`,
`Chart`), built once and rendered twice (`markdown.py`, `html.py`), so the two pages cannot drift.
A block says which of its parts are run data (ids, prompts, code): both renderings escape those.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Block", "Chart", "Pre", "Section", "Table", "Text"]


@dataclass
class Text:
    text: str  # our own prose; each "{}" is filled with one item of `data`, shown as code
    data: tuple[str, ...] = ()
    alert: bool = False  # shown prominently (a warning the reader must not miss)


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    data_columns: frozenset[int] = frozenset()  # columns holding run data (ids, prompts): escaped as code


@dataclass
class Pre:
    text: str  # preformatted, may hold run data (code): fenced / <pre>


@dataclass
class Chart:
    alt: str  # our own prose (no run data): the Markdown image's alt text
    svg: str  # a standalone SVG document from charts.histogram_svg
    text: str  # the same histogram as text, kept in Markdown for readers without images


Block = Text | Table | Pre | Chart


@dataclass
class Section:
    title: str
    blocks: list[Block]
