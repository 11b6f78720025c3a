"""The HTML report: one self-contained page, laid out by `prompts/report.html.j2`.

Pictures are embedded as data URIs so the page can be mailed or archived as one file.
"""

from __future__ import annotations

import base64

from .context import ReportOptions, render_context, template
from .figures import Figures


def _data_uri(data: bytes, kind: str) -> str:
    return f"data:image/{kind};base64," + base64.b64encode(data).decode("ascii")


def render_html(document: dict, figures: Figures, options: ReportOptions = ReportOptions()) -> str:
    """A self-contained page: every picture embedded as a data URI."""
    pictures = {k: tuple(_data_uri(p, "jpeg") for p in pair) for k, pair in figures.pictures.items()}
    histogram = _data_uri(figures.histogram, "png") if figures.histogram is not None else None
    return template("report.html.j2").render(**render_context(document, options), pictures=pictures,
                                             histogram=histogram)
