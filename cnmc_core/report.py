"""The self-contained HTML document behind a study report: one file that opens offline in any browser.

It knows nothing of studies (`dashboard.report` fills it). What it guarantees:

- every text handed to it is HTML-escaped here (`Document.paragraph`, `table`, `facts`, captions), so a
  hostile study name, subject or JSON value from a shared study stays text; only this module writes markup;
- Plotly figures stay interactive: plotly.js, which ships inside the plotly package, is embedded once,
  inline, with the first figure (`include_plotlyjs=True`, then False); no CDN, no MathJax;
- images are embedded as `data:` URIs; the only links are `#section` anchors;
- nothing is fetched when the file is opened: no external script, style sheet, font or image.
"""

from __future__ import annotations

import base64
import html
import io
import math
import numbers
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.io as pio
from PIL import Image

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}  # no "Produced with Plotly" link to plotly.com
JPEG_QUALITY = 85  # overlays: a quarter of their PNG size, the heatmap colours unchanged to the eye
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1180px;
padding:0 24px 48px;color:#1f2430;line-height:1.45}
h1{margin:24px 0 4px}h2{border-bottom:2px solid #dfe3ea;padding-bottom:4px;margin-top:40px}h3{margin-top:24px}
nav ul{columns:2;padding-left:18px}.muted{color:#5b6170;font-size:.92em}
.notice{border-left:6px solid #d98c00;background:#fff6e0;padding:10px 14px;margin:12px 0}
.notice.danger{border-color:#c62828;background:#fdecea}.notice.info{border-color:#3b5ba9;background:#eef2fb}
table{border-collapse:collapse;margin:8px 0 4px;font-size:.9em}th,td{border:1px solid #dfe3ea;padding:4px 8px}
th{background:#f3f5f9;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td .ci{display:block;color:#5b6170;font-size:.85em;white-space:normal;min-width:9em}
tr.ref td{color:#5b6170;font-style:italic}
caption{text-align:left;caption-side:bottom}.scroll{overflow-x:auto}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px}dt{font-weight:600}
dd{margin:0;font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9em;overflow-wrap:anywhere}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:10px}
figure{margin:0}figure img{width:100%;height:auto;image-rendering:auto;border-radius:4px}
figcaption{font-size:.8em;color:#3d4250;overflow-wrap:anywhere}.plot{margin:6px 0 2px}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:8px}
@media print{nav{display:none}.plot{break-inside:avoid}}
"""


def text(value) -> str:
    """Any value as HTML text: escaped (quotes too), control characters shown as U+FFFD."""
    return html.escape(re.sub("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "\ufffd", str(value)), quote=True)


@dataclass(frozen=True)
class Cell:
    """A table cell: what people read (`shown`), the number behind it (`value`, machine-readable in the
    file as data-value) and an optional second line (`below`, e.g. a 95% interval)."""
    shown: str
    value: float | None = None
    below: str = ""


def number_cell(value, digits: int = 3, below: str = "") -> Cell:
    """A number rounded for people, its full value kept; NaN, None and text become an em dash."""
    if not _is_number(value) or not math.isfinite(value):
        return Cell("—", None, below)
    shown = str(int(value)) if isinstance(value, numbers.Integral) else f"{value:.{digits}f}"
    return Cell(shown, float(value), below)


def image_uri(image: Image.Image, kind: str = "JPEG") -> str:
    """A `data:` URI of `image` as JPEG (photos, overlays) or PNG (flat colours)."""
    buffer = io.BytesIO()
    if kind == "JPEG":
        image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    else:
        image.save(buffer, format="PNG", optimize=True)
    return f"data:image/{kind.lower()};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


class Document:
    """An HTML report built top to bottom: sections (listed in the contents), text, tables, figures, images."""

    def __init__(self, title: str):
        self.title = title
        self._parts: list[str] = []
        self._sections: list[tuple[str, str]] = []  # (anchor, heading)
        self._figures = 0
        self._top: list[str] = []  # notices above the contents

    # ---- structure and text ---------------------------------------------------------------------
    def section(self, heading: str, anchor: str) -> None:
        """A top-level section (h2) with the id `anchor` ([a-z0-9-]: made by the caller, never from a study)."""
        if not re.fullmatch(r"[a-z0-9-]{1,40}", anchor):
            raise ValueError(f"section anchor must be 1-40 of a-z, 0-9 and '-'; got {anchor!r}")
        self._sections.append((anchor, heading))
        self._parts.append(f'<section id="{anchor}"><h2>{text(heading)}</h2>')

    def end_section(self) -> None:
        self._parts.append("</section>")

    def subheading(self, heading: str) -> None:
        self._parts.append(f"<h3>{text(heading)}</h3>")

    def paragraph(self, words: str, muted: bool = False, strong: bool = False) -> None:
        body = f"<strong>{text(words)}</strong>" if strong else text(words)
        self._parts.append(f'<p{" class=muted" if muted else ""}>{body}</p>')

    def notice(self, words: str, kind: str = "warning", title: str = "", top: bool = False) -> None:
        """A framed notice: kind warning (amber), danger (red) or info (blue); `top`: above the contents."""
        if kind not in ("warning", "danger", "info"):
            raise ValueError(f"notice kind must be warning, danger or info; got {kind!r}")
        lead = f"<strong>{text(title)}</strong> " if title else ""
        (self._top if top else self._parts).append(f'<div class="notice {kind}" role="note">{lead}{text(words)}</div>')

    def facts(self, pairs: dict) -> None:
        """A definition list: label -> value, both shown literally."""
        rows = "".join(f"<dt>{text(k)}</dt><dd>{text(v)}</dd>" for k, v in pairs.items())
        self._parts.append(f"<dl>{rows}</dl>")

    # ---- tables ---------------------------------------------------------------------------------
    def table(self, columns: list[str], rows: list[list], row_ids: list[str] | None = None,
              row_classes: list[str] | None = None, caption: str = "", table_id: str = "") -> None:
        """A table of `rows` (each a list of Cells, numbers or text) under `columns`.

        Numeric cells carry `data-value` (the full number) and every cell `data-col` (its column), every row
        `data-row` (its id): the file can be read back by a program as well as by people.
        """
        head = "".join(f"<th scope=col>{text(c)}</th>" for c in columns)
        body = []
        for i, row in enumerate(rows):
            attributes = f' data-row="{text(row_ids[i])}"' if row_ids else ""
            if row_classes and row_classes[i]:
                attributes += f' class="{text(row_classes[i])}"'
            body.append(f"<tr{attributes}>" + "".join(self._cell(c, v) for c, v in zip(columns, row)) + "</tr>")
        ident = f' id="{text(table_id)}"' if table_id else ""
        cap = f"<caption class=muted>{text(caption)}</caption>" if caption else ""
        self._parts.append(f'<div class=scroll><table{ident}>{cap}<thead><tr>{head}</tr></thead>'
                           f'<tbody>{"".join(body)}</tbody></table></div>')

    def frame(self, frame: pd.DataFrame, digits: dict[str, int] | None = None, caption: str = "",
              table_id: str = "") -> None:
        """A DataFrame as a table: float columns rounded (3 digits unless `digits` says), the rest as text."""
        digits = digits or {}
        def shown(column, value):
            if isinstance(value, (bool, np.bool_)):
                return "yes" if value else "no"
            return number_cell(value, digits.get(column, 3)) if _is_number(value) else "—" if _missing(value) else value

        rows = [[shown(c, v) for c, v in zip(frame.columns, values)] for values in frame.itertuples(index=False)]
        self.table([str(c) for c in frame.columns], rows, caption=caption, table_id=table_id)

    @staticmethod
    def _cell(column: str, value) -> str:
        if not isinstance(value, Cell):
            value = number_cell(value) if _is_number(value) else Cell(str(value))
        data = f' data-value="{value.value!r}"' if value.value is not None else ""
        below = f'<span class=ci>{text(value.below)}</span>' if value.below else ""
        kind = ' class="num"' if value.value is not None or value.shown == "—" else ""
        return f'<td{kind} data-col="{text(column)}"{data}>{text(value.shown)}{below}</td>'

    # ---- figures and images ---------------------------------------------------------------------
    def figure(self, fig, caption: str = "") -> None:
        """An interactive Plotly figure (a go.Figure, or its dict); the first one carries plotly.js itself, inline."""
        self._figures += 1
        div = pio.to_html(fig, full_html=False, include_plotlyjs=self._figures == 1, include_mathjax=False,
                          config=PLOTLY_CONFIG, div_id=f"figure-{self._figures}", validate=False)
        cap = f'<p class="muted">{text(caption)}</p>' if caption else ""
        self._parts.append(f'<div class="plot">{div}</div>{cap}')

    def figures(self, figs: list, caption: str = "") -> None:
        """Interactive figures side by side, two to a row (small multiples)."""
        self._parts.append('<div class="plots">')
        for fig in figs:
            self.figure(fig)
        self._parts.append(f'</div>{f"<p class=muted>{text(caption)}</p>" if caption else ""}')

    def images(self, items: list[tuple[str | None, str]], caption: str = "") -> None:
        """A grid of (data URI or None, caption); None shows the caption with "image not available"."""
        cells = []
        for uri, words in items:
            if uri is None:
                cells.append(f'<figure><figcaption>{text(words)} (image not available)</figcaption></figure>')
            elif not uri.startswith(("data:image/jpeg;base64,", "data:image/png;base64,")):
                raise ValueError("images are embedded as data:image/jpeg or data:image/png URIs only")
            else:
                cells.append(f'<figure><img src="{uri}" alt="{text(words)}">'
                             f"<figcaption>{text(words)}</figcaption></figure>")
        cap = f'<p class="muted">{text(caption)}</p>' if caption else ""
        self._parts.append(f'{cap}<div class="grid">{"".join(cells)}</div>')

    # ---- the file -------------------------------------------------------------------------------
    def render(self) -> str:
        """The whole HTML file: title, the top notices, contents, then the sections."""
        contents = "".join(f'<li><a href="#{a}">{text(h)}</a></li>' for a, h in self._sections)
        return (
            "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width, initial-scale=1">'
            # Nothing from outside: a Content-Security-Policy that allows inline code and data: images only.
            "<meta http-equiv=Content-Security-Policy content=\"default-src 'none'; script-src 'unsafe-inline' "
            "'unsafe-eval'; style-src 'unsafe-inline'; img-src data: blob:; font-src data:\">"
            f"<title>{text(self.title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{text(self.title)}</h1>{''.join(self._top)}<nav><strong>Contents</strong><ul>{contents}</ul></nav>"
            + "".join(self._parts) + "</body></html>\n"
        )


def _is_number(value) -> bool:
    """A real number (Python's or NumPy's), not a bool and not NaN."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and not _missing(value)


def _missing(value) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
