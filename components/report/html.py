"""The report page as one self-contained HTML page: run data escaped with `html.escape`, charts
as inline `<svg>` (their text already escaped by `charts.py`), no external reference.
"""

from __future__ import annotations

import html

from codedpo.components.report.charts import SVG_NAMESPACE
from codedpo.components.report.document import Chart, Section, Table, Text

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
