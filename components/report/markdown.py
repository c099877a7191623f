"""The report page as Markdown. Run data goes in code spans and fenced blocks (never rendered as
HTML), so a prompt or code holding `<script>` stays text; a chart is its text histogram plus a
`data:image/svg+xml;base64,` image of its SVG.
"""

from __future__ import annotations

import base64
import re

from codedpo.components.report.document import Chart, Section, Table, Text


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
