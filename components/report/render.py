"""The report's tiny document model and its two renderings, Markdown and one self-contained HTML page.

The sections are built once as blocks (`Text`, `Table`, `Pre`, `Chart`) and rendered twice, so the
two pages cannot drift. Run data (ids, prompts, code) is escaped in both: in HTML with
`html.escape`, in Markdown by putting it in code spans and fenced blocks, so a prompt or code
holding `<script>` stays text. A chart is SVG from `charts.py` (its text already escaped): inline
`<svg>` in HTML, a `data:image/svg+xml;base64,` image in Markdown next to the text histogram.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass

from codedpo.components.report.charts import SVG_NAMESPACE

__all__ = ["Block", "Chart", "Pre", "Section", "Table", "Text", "to_html", "to_markdown"]


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


def _md_code_span(text: str, in_table: bool = False) -> str:
    """`text` as a Markdown code span (never rendered as HTML); in a table cell `|` is escaped."""
    text = text.replace("\n", " ")
    if in_table:
        text = text.replace("|", "\\|")
    if not text:
        return ""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {text} {fence}"


def _md_fenced(text: str) -> list[str]:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, text, fence, ""]


def to_markdown(title: str, sections: list[Section]) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Text):
                text = block.text.format(*map(_md_code_span, block.data)) if block.data else block.text
                lines += [f"> **{text}**" if block.alert else text, ""]
            elif isinstance(block, Table):
                lines.append("| " + " | ".join(block.headers) + " |")
                lines.append("|" + "---|" * len(block.headers))
                for row in block.rows:
                    cells = [_md_code_span(c, in_table=True) if i in block.data_columns else c for i, c in enumerate(row)]
                    lines.append("| " + " | ".join(cells) + " |")
                lines.append("")
            elif isinstance(block, Chart):
                lines += _md_fenced(block.text)
                encoded = base64.b64encode(block.svg.encode("utf-8")).decode("ascii")
                lines += [f"![{block.alt}](data:image/svg+xml;base64,{encoded})", ""]
            else:
                lines += _md_fenced(block.text)
    return "\n".join(lines)


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
    "table{border-collapse:collapse;margin:.5rem 0 1rem}th,td{border:1px solid #ccc;padding:.2rem .5rem;text-align:left}"
    "th{background:#f3f3f3}pre{background:#f7f7f7;padding:.5rem;overflow-x:auto}code{font-size:.9em}"
    ".alert{border-left:.3rem solid #c0392b;background:#fdecea;padding:.5rem}figure{margin:.5rem 0 1rem}"
)


def _inline_svg(svg: str) -> str:
    """The chart as an inline <svg>: HTML5 puts <svg> in the SVG namespace itself, and dropping the
    attribute keeps the page free of any URL (the page promises no external references)."""
    return svg.replace(f' xmlns="{SVG_NAMESPACE}"', "", 1).strip()


def to_html(title: str, sections: list[Section]) -> str:
    escape = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<h2>{escape(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, Text):
                data = (f"<code>{escape(item)}</code>" for item in block.data)
                text = escape(block.text).format(*data) if block.data else escape(block.text)
                if block.alert:
                    parts.append(f'<p class="alert"><strong>{text}</strong></p>')
                else:
                    parts.append(f"<p>{text}</p>")
            elif isinstance(block, Table):
                parts.append("<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in block.headers) + "</tr>")
                for row in block.rows:
                    cells = [
                        f"<td><code>{escape(c)}</code></td>" if i in block.data_columns else f"<td>{escape(c)}</td>"
                        for i, c in enumerate(row)
                    ]
                    parts.append("<tr>" + "".join(cells) + "</tr>")
                parts.append("</table>")
            elif isinstance(block, Chart):
                parts.append(f"<figure>{_inline_svg(block.svg)}</figure>")
            else:
                parts.append(f"<pre>{escape(block.text)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
