"""HTML pieces of the report: one self-contained page (inline CSS, PNGs as data URIs), escaped text."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from typing import Any, Sequence

CSS = """
body { font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       max-width: 1100px; margin: 0 auto; padding: 16px 28px 60px; background: #fff; }
h1 { font-size: 24px; margin: 8px 0 4px; }
h2 { font-size: 19px; margin: 34px 0 8px; padding-top: 10px; border-top: 1px solid #d0d7de; }
h3 { font-size: 15px; margin: 18px 0 6px; }
p { margin: 6px 0; }
.meta { color: #57606a; }
.note { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px; padding: 6px 10px; }
nav { columns: 2; font-size: 13px; background: #f6f8fa; border-radius: 6px; padding: 8px 12px 8px 28px; }
nav li { margin: 1px 0; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: 3px 9px; }
th { background: #f6f8fa; text-align: left; font-weight: 600; }
td.num { text-align: right; }
tr.best td { background: #dafbe1; }
img.plot { display: block; max-width: 100%; height: auto; margin: 8px 0; border: 1px solid #eaeef2; }
code { background: #f6f8fa; padding: 1px 4px; border-radius: 4px; font-size: 12px; }
.scroll { overflow-x: auto; }
.row { display: flex; flex-wrap: wrap; gap: 8px 24px; align-items: flex-start; }
.row > * { min-width: 0; }
"""


@dataclass
class Section:
    """One `<h2 id=...>` section: a stable id, a heading and its HTML body parts."""

    id: str
    title: str
    parts: list[str] = field(default_factory=list)

    def add(self, *parts: str) -> "Section":
        self.parts.extend(parts)
        return self

    def render(self) -> str:
        return f'<section>\n<h2 id="{self.id}">{esc(self.title)}</h2>\n' + "\n".join(self.parts) + "\n</section>"


def esc(text: Any) -> str:
    """HTML-escape any value's text."""
    return html.escape(str(text), quote=True)


def paragraph(text: str, cls: str | None = None) -> str:
    """A <p> of escaped text."""
    return f'<p class="{cls}">{esc(text)}</p>' if cls else f"<p>{esc(text)}</p>"


def raw_paragraph(markup: str, cls: str | None = None) -> str:
    """A <p> of markup the caller already escaped (for <code> pieces)."""
    return f'<p class="{cls}">{markup}</p>' if cls else f"<p>{markup}</p>"


def heading(text: str) -> str:
    return f"<h3>{esc(text)}</h3>"


def image(png: bytes, alt: str) -> str:
    """An <img> holding the PNG as a base64 data URI."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="plot" alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def table(header: Sequence[Any], rows: Sequence[Sequence[Any]], highlight: int | None = None) -> str:
    """A table; cells that are numbers (or look like formatted numbers) are right-aligned.

    `highlight` marks one row (by index) as the best.
    """
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = "".join(f'<td class="num">{esc(c)}</td>' if _numeric(c) else f"<td>{esc(c)}</td>" for c in row)
        body.append(f'<tr class="best">{cells}</tr>' if i == highlight else f"<tr>{cells}</tr>")
    return f'<div class="scroll"><table>\n<tr>{head}</tr>\n' + "\n".join(body) + "\n</table></div>"


def _numeric(cell: Any) -> bool:
    if isinstance(cell, (int, float)):
        return True
    text = str(cell).replace(",", "").replace("%", "").replace("+", "").replace("-", "", 1).strip()
    return text.replace(".", "", 1).isdigit() or str(cell) == "-"


def row(*parts: str) -> str:
    """Parts side by side (wrapping when the page is narrow); empty parts are left out."""
    return '<div class="row">' + "".join(p for p in parts if p) + "</div>"


def page(title: str, intro: Sequence[str], sections: Sequence[Section]) -> str:
    """The whole document: title, intro parts, a table of contents and the sections."""
    toc = "".join(f'<li><a href="#{s.id}">{esc(s.title)}</a></li>' for s in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{esc(title)}</title>\n"
            f"<style>{CSS}</style>\n</head>\n<body>\n<h1>{esc(title)}</h1>\n" + "\n".join(intro) +
            f"\n<nav><ul>{toc}</ul></nav>\n" + "\n".join(s.render() for s in sections) + "\n</body>\n</html>\n")


def pct(x: float | None, digits: int = 2) -> str:
    """0.9443 -> '94.43%'; None -> '-'."""
    return "-" if x is None else f"{100 * x:.{digits}f}%"
