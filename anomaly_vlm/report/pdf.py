"""The PDF report, drawn with fpdf2's core fonts: what gets printed and filed with a batch.

Core fonts need no font files shipped, at the price of Latin-1 text only; the layout
follows the HTML page section by section.
"""

from __future__ import annotations

import io

from .context import ReportOptions, region_cells, region_columns, render_context
from .figures import Figures


def _latin1(text: str) -> str:
    """PDF core fonts cover Latin-1 only; keep the text readable rather than failing on a dash."""
    text = text.translate(str.maketrans({"\u2014": "-", "\u2013": "-", "\u2018": "'", "\u2019": "'",
                                         "\u201c": '"', "\u201d": '"', "\u2026": "...", "\u00a0": " "}))
    return text.encode("latin-1", "replace").decode("latin-1")


class _Pdf:
    """An A4 document and the report's building blocks: heading, paragraph, table and picture pair."""

    def __init__(self, title: str, creator: str):
        from fpdf import FPDF
        from fpdf.enums import XPos, YPos

        self.fpdf = FPDF(format="A4")
        self.fpdf.set_auto_page_break(True, margin=15)
        self.fpdf.set_title(_latin1(title))
        self.fpdf.set_creator(_latin1(creator))
        self.fpdf.add_page()
        self.width = self.fpdf.epw
        self._next_line = {"new_x": XPos.LMARGIN, "new_y": YPos.NEXT}

    def heading(self, text: str, size: int = 13) -> None:
        pdf = self.fpdf
        if pdf.get_y() > pdf.h - pdf.b_margin - 25:
            pdf.add_page()
        pdf.set_font("Helvetica", "B", size)
        pdf.cell(0, size * 0.6, _latin1(text), **self._next_line)
        pdf.ln(1)

    def paragraph(self, text: str, size: int = 10, style: str = "") -> None:
        self.fpdf.set_font("Helvetica", style, size)
        self.fpdf.multi_cell(0, size * 0.5, _latin1(text), **self._next_line)
        self.fpdf.ln(1)

    def table(self, header: list[str], rows: list[list[str]], widths: tuple[int, ...]) -> None:
        self.fpdf.set_font("Helvetica", "", 8)
        with self.fpdf.table(col_widths=widths, text_align="LEFT", line_height=4.5,
                             first_row_as_headings=True) as grid:
            for row in [header] + rows:
                cells = grid.row()
                for value in row:
                    cells.cell(_latin1(str(value)))
        self.fpdf.ln(2)

    def picture_pair(self, pair: tuple[bytes, bytes], size: tuple[int, int]) -> None:
        """Two pictures side by side at half width each, on a new page if they do not fit."""
        pdf = self.fpdf
        top, half = pdf.get_y(), (self.width - 4) / 2
        image_width, image_height = size
        height = half * image_height / image_width
        if top + height > pdf.h - 20:
            pdf.add_page()
            top = pdf.get_y()
        for column, data in enumerate(pair):
            pdf.image(io.BytesIO(data), x=pdf.l_margin + column * (half + 4), y=top, w=half)
        pdf.set_y(top + height + 2)


def _batch_summary(pdf: _Pdf, document: dict, figures: Figures, words: dict) -> None:
    """The score histogram, the ranked table of every image and the files that could not be inspected."""
    pdf.heading(words["sections"]["summary"])
    if figures.histogram is not None:
        pdf.fpdf.image(io.BytesIO(figures.histogram), w=min(pdf.width, 150))
    columns = words["batch_columns"]
    rows = [[str(n), item["image_id"], f"{item['image_score']:.3f}", words["verdict"][item["verdict"]],
             str(len(item["regions"])), item["regions"][0]["location"] if item["regions"] else "-"]
            for n, item in enumerate(document["images"], 1)]
    pdf.heading(words["sections"]["table"])
    pdf.table([columns[k] for k in ("rank", "image", "score", "verdict", "regions", "where")], rows,
              (8, 60, 16, 40, 14, 30))
    if document["failures"]:
        pdf.heading(words["sections"]["failures"])
        for failure in document["failures"]:
            pdf.paragraph(f"{failure['path']}: {failure['error']}", 8)


def _image_detail(pdf: _Pdf, item: dict, figures: Figures, context: dict) -> None:
    """One image in full: verdict, pictures, region table and the assistant's explanation."""
    words = context["w"]
    if pdf.fpdf.get_y() > pdf.fpdf.h - 120:
        pdf.fpdf.add_page()
    pdf.heading(f"{item['image_id']}: {words['verdict'][item['verdict']]}", 12)
    pdf.paragraph(context["score_line"](item), 9)
    if item["image_id"] in figures.pictures:
        pdf.picture_pair(figures.pictures[item["image_id"]], figures.sizes[item["image_id"]])
    columns = words["columns"]
    if item["regions"]:
        rows = [[str(n)] + region_cells(item, r) for n, r in enumerate(item["regions"], 1)]
        keys = region_columns(item)
        widths = (6, 18, 30, 16, 14, 14, 70) if "looks" in keys else (8, 30, 50, 30, 25, 25)
        pdf.table([columns[k] for k in keys], rows, widths)
    else:
        pdf.paragraph(words["no_regions"], 9, "I")
    if item["explanation"]:
        pdf.heading(words["sections"]["explanation"], 10)
        pdf.paragraph(item["explanation"], 9)
        for flag in item["flags"]:
            pdf.paragraph(f"! {flag}", 8, "I")


def render_pdf(document: dict, figures: Figures, options: ReportOptions = ReportOptions()) -> bytes:
    """The report as A4 PDF: title, batch summary, each detailed image, then models and footer."""
    context = render_context(document, options)
    words = context["w"]
    pdf = _Pdf(context["title"], document["generator"])
    pdf.heading(context["title"], 16)
    pdf.paragraph(document["created"] + (f"  |  {context['counts']}" if document["kind"] == "batch" else ""), 9)
    if document["kind"] == "batch":
        _batch_summary(pdf, document, figures, words)
    for item in context["details"]:
        _image_detail(pdf, item, figures, context)
    pdf.heading(words["sections"]["models"], 10)
    for line in context["models"]:
        pdf.paragraph(line, 8)
    pdf.paragraph(words["model_lines"]["settings_elsewhere"], 7, "I")
    pdf.paragraph(context["footer"], 7, "I")
    return bytes(pdf.fpdf.output())
