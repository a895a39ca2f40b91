"""The report drawn as one static HTML page: inline CSS, tables, cards with thumbnails; no server, no scripts
fetched from anywhere.

One small inline script sets `data-images` on <body> once the page has loaded: "loaded" when every <img>
decoded (naturalWidth > 0), else "broken N": a browser test reads it back from the rendered DOM.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from compkit.report.content import Example, Report, Section, Shown

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 8px 0; } td, th { padding: 3px 10px; border: 1px solid #ddd; }
th { background: #f4f4f4; text-align: left; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; }
dl.facts dt { color: #666; } dl.facts dd { margin: 0; }
.examples { display: flex; flex-wrap: wrap; gap: 12px; }
.example { border: 1px solid #ccc; border-radius: 6px; padding: 8px; background: #fafafa; }
.example h3 { font-size: 13px; margin: 0 0 6px; font-weight: 600; }
.cards { display: flex; gap: 8px; }
.card { width: 150px; font-size: 12px; overflow-wrap: anywhere; }
.card img { width: 128px; height: 128px; object-fit: contain; background: #eee; display: block; }
.card .role { font-weight: 600; color: #555; }
"""
SCRIPT = """
window.addEventListener("load", function () {
  var broken = Array.prototype.filter.call(document.images, function (image) {
    return !(image.complete && image.naturalWidth > 0);
  }).length;
  document.body.setAttribute("data-images", broken ? "broken " + broken : "loaded");
});
"""


def render_page(report: Report, thumbnails: dict[int, str]) -> str:
    """Return the report as an HTML document; `thumbnails` maps each shown row to its image's relative URL."""
    sections = "\n".join(_section(section, thumbnails) for section in report.sections)
    facts = "".join(f"<dt>{_text(name)}</dt><dd>{_text(value)}</dd>" for name, value in report.facts)
    contents = "".join(f'<li><a href="#{s.key}">{_text(s.title)}</a></li>' for s in report.sections)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{_text(report.title)}</title>\n'
            f"<style>{STYLE}</style>\n<script>{SCRIPT}</script>\n</head>\n<body>\n<h1>{_text(report.title)}</h1>\n"
            f'<dl class="facts">{facts}</dl>\n<ul class="contents">{contents}</ul>\n{sections}\n</body>\n</html>\n')


def _section(section: Section, thumbnails: dict[int, str]) -> str:
    parts = [f'<section id="{section.key}" data-section="{section.key}">', f"<h2>{_text(section.title)}</h2>"]
    if section.text:
        parts.append(f"<p>{_text(section.text)}</p>")
    if section.table is not None:
        parts.append(_table(section.table))
    if section.examples:
        parts.append('<div class="examples">' + "".join(_example(e, thumbnails) for e in section.examples) + "</div>")
    elif section.table is None:
        parts.append("<p>None.</p>")
    return "\n".join(parts + ["</section>"])


def _table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{_text(str(column).replace('_', ' '))}</th>" for column in frame.columns)
    body = []
    for values in frame.itertuples(index=False):  # a summary table: a few dozen rows at most
        cells = "".join(_cell(value) for value in values)
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _cell(value) -> str:
    if isinstance(value, float | np.floating):
        return f'<td class="number">{"-" if np.isnan(value) else f"{value:.4f}"}</td>'
    if isinstance(value, int | np.integer):
        return f'<td class="number">{int(value):,}</td>'
    return f"<td>{_text(value)}</td>"


def _example(example: Example, thumbnails: dict[int, str]) -> str:
    cards = "".join(_card(shown, thumbnails) for shown in example.shown)
    return f'<div class="example"><h3>{_text(example.heading)}</h3><div class="cards">{cards}</div></div>'


def _card(shown: Shown, thumbnails: dict[int, str]) -> str:
    url = thumbnails.get(shown.row)
    image = f'<img src="{html.escape(url)}" alt="row {shown.row}">' if url else ""
    lines = "".join(f"<div>{_text(line)}</div>" for line in shown.lines)
    return f'<div class="card">{image}<div class="role">{_text(shown.role)}</div>{lines}</div>'


def _text(value) -> str:
    return html.escape(str(value), quote=True)
