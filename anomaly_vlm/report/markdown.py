"""The Markdown report, laid out by `prompts/report.md.j2`, with its pictures as files beside it.

Markdown cannot embed images portably, so the renderer returns the files it links to
and the caller writes them.
"""

from __future__ import annotations

from .context import ReportOptions, render_context, template
from .figures import Figures


def render_markdown(document: dict, figures: Figures, assets: str,
                    options: ReportOptions = ReportOptions()) -> tuple[str, dict[str, bytes]]:
    """Markdown text and the picture files it links to, under the relative folder `assets`.

    User text is HTML-escaped here too: Markdown viewers render raw HTML, and entities
    display as the characters they stand for.
    """
    files, pictures = {}, {}
    for number, (key, (original, shown)) in enumerate(figures.pictures.items(), 1):
        names = (f"{assets}/{number:03d}_original.jpg", f"{assets}/{number:03d}_overlay.jpg")
        files.update({names[0]: original, names[1]: shown})
        pictures[key] = names
    histogram = None
    if figures.histogram is not None:
        histogram = f"{assets}/histogram.png"
        files[histogram] = figures.histogram
    text = template("report.md.j2").render(**render_context(document, options), pictures=pictures,
                                           histogram=histogram)
    return text, files
