"""Defect reports for production: one image or a batch, as HTML, Markdown, JSON and PDF.

Every format renders the same JSON document (schema in `report_schema.json`,
`schema_version` 1), so what the PDF says is what the JSON says. Wording comes from
`prompts/report.yaml` and the HTML/Markdown layouts from `prompts/report.*.j2`.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from PIL import Image

from .attributes import RegionAttributes
from .errors import AnomalyVLMError
from .files import write_bytes, write_json, write_text
from .inspector import BatchRun, Inspector, attach_image
from .io import load_image
from .prompts import load_yaml, prompts_dir
from .types import Inspection
from .verdicts import Thresholds, count_verdicts, describe_thresholds
from .visualize import annotate, score_histogram


SCHEMA_VERSION = 2
FORMATS = ("html", "md", "json", "pdf")
SCHEMA_PATH = Path(__file__).with_name("report_schema.json")


@dataclass
class ReportEntry:
    """One inspected image as a report shows it: the inspection and what the assistant said about it."""

    inspection: Inspection
    path: str | None = None
    explanation: str | None = None
    flags: list[str] = field(default_factory=list)


@dataclass
class ReportOptions:
    details: int = field(default=10, metadata={"help": "images shown in full in a batch report, worst first"})
    image_side: int = field(default=768, metadata={"help": "longest side of embedded pictures, in pixels"})
    title: str | None = field(default=None, metadata={"help": "report title (default from prompts/report.yaml)"})


def _version() -> str:
    try:
        return metadata.version("anomaly-vlm")
    except metadata.PackageNotFoundError:
        return "unknown"


def report_document(entries: list[ReportEntry], failures: list[dict] = (), settings: dict | None = None,
                    assistant: dict | None = None, created: datetime | None = None,
                    thresholds: Thresholds | None = None) -> dict:
    """The report as JSON-ready data: images worst first, verdict counts, thresholds, models and settings."""
    ranked = sorted(entries, key=lambda e: -e.inspection.image_score)
    images = [{**e.inspection.to_dict(), "path": e.path, "explanation": e.explanation, "flags": list(e.flags)}
              for e in ranked]
    if thresholds is None and entries:
        first = entries[0].inspection
        thresholds = Thresholds(first.threshold, first.review_threshold, first.threshold_source)
    kinds = [f.get("kind", "unreadable") for f in failures]
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "image" if len(entries) == 1 and not failures else "batch",
        "created": (created or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
        "generator": f"anomaly-vlm {_version()}",
        "summary": {"total": len(entries) + len(failures), **count_verdicts([e.inspection.verdict for e in entries]),
                    "unreadable": kinds.count("unreadable"), "unscored": kinds.count("unscored"),
                    "errors": len(failures), "thresholds": thresholds.to_dict() if thresholds else None},
        "settings": settings or {},
        "assistant": assistant,
        "images": images,
        "failures": [{"path": str(f["path"]), "error": str(f["error"]), "kind": f.get("kind", "unreadable")}
                     for f in failures],
    }


@dataclass
class Figures:
    """A report's pictures, encoded once for every format.

    Per detailed image: the original and the annotated overlay as JPEG (a tenth of the
    PNG size, embedded as is in the PDF) and the image's (width, height); the batch
    histogram as PNG.
    """

    pictures: dict[str, tuple[bytes, bytes]]
    sizes: dict[str, tuple[int, int]]
    histogram: bytes | None


def _encoded(image: Image.Image, fmt: str, side: int | None = None) -> bytes:
    image = image.convert("RGB")
    if side:
        image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 88} if fmt == "JPEG" else {"optimize": True}))
    return buffer.getvalue()


def _picture(entry: ReportEntry) -> Image.Image | None:
    """The entry's image: in memory, else read again from its file (batch runs do not keep images)."""
    if entry.inspection.image is None and entry.path:
        try:
            return load_image(entry.path)
        except AnomalyVLMError:
            return None
    return entry.inspection.image


def make_figures(entries: list[ReportEntry], document: dict, options: ReportOptions) -> Figures:
    by_id = {e.inspection.image_id: e for e in entries}
    pictures, sizes = {}, {}
    for item in document["images"][: _detail_count(document, options)]:
        entry = by_id[item["image_id"]]
        image = _picture(entry)
        if image is None:
            continue
        shown = annotate(image, entry.inspection.anomaly_map, entry.inspection.regions)
        pictures[item["image_id"]] = tuple(_encoded(p, "JPEG", options.image_side) for p in (image, shown))
        sizes[item["image_id"]] = image.size
    histogram = None
    thresholds = document["summary"]["thresholds"]
    if document["kind"] == "batch" and document["images"] and thresholds:
        lines = [t for t in (thresholds["fail"], thresholds["review"]) if t is not None]
        histogram = _encoded(score_histogram([i["image_score"] for i in document["images"]], lines), "PNG")
    return Figures(pictures, sizes, histogram)


def _detail_count(document: dict, options: ReportOptions) -> int:
    return len(document["images"]) if document["kind"] == "image" else options.details


def _context(document: dict, options: ReportOptions) -> dict:
    words = load_yaml("report.yaml")
    title = options.title or (words["title"] if document["kind"] == "image" else words["batch_title"])
    summary = document["summary"]
    return {"doc": document, "w": words, "title": title,
            "details": document["images"][: _detail_count(document, options)],
            "counts": words["counts"].format(
                total=summary["total"], fail=summary["fail"], review=summary["review"], passed=summary["pass"],
                errors=words["errors_part"].format(**summary) if summary["errors"] else ""),
            "footer": words["footer"].format(version=_version(), created=document["created"]),
            "score_line": lambda item: words["score_line"].format(
                score=item["image_score"], threshold=item["threshold"],
                review=words["review_part"].format(review=item["review_threshold"])
                if item["review_threshold"] is not None else ""),
            "columns": _region_columns,
            "region_cells": _region_cells,
            "models": _model_lines(document, words),
            "settings_json": json.dumps(document["settings"], indent=2)}


REGION_COLUMNS = ("number", "location", "box", "size", "peak", "mean")


def _measured(item: dict) -> bool:
    """Whether any region of the image had its look measured (images kept in memory; not batch runs)."""
    return any(r.get("attributes") for r in item["regions"])


def _region_columns(item: dict) -> tuple[str, ...]:
    """The region table's column keys: the look column only when some region has one."""
    return REGION_COLUMNS + (("looks",) if _measured(item) else ())


def _region_cells(item: dict, region: dict) -> list[str]:
    """One region table row as text, in `_region_columns` order; `number` is filled by the caller."""
    cells = [region["location"], ", ".join(map(str, region["box"])), f"{100 * region['area_fraction']:.2f}",
             f"{region['peak_score']:.2f}", f"{region['mean_score']:.2f}"]
    if _measured(item):
        attributes = region.get("attributes")
        cells.append(RegionAttributes.from_dict(attributes).describe(short=True) if attributes else "-")
    return cells


def _model_lines(document: dict, words: dict) -> list[str]:
    """Which localizer(s) and assistant made the report, and the threshold, in a few readable lines."""
    from .assistant.backends import describe_assistant
    from .localizer import describe_models

    localizers = list(dict.fromkeys(describe_models(i["models"]) for i in document["images"] if i["models"]))
    lines = [words["model_lines"]["localizer"].format(name) for name in localizers]
    sizes = list(dict.fromkeys(f"{i['map_size'][0]}x{i['map_size'][1]}" for i in document["images"] if i.get("map_size")))
    if sizes:
        lines.append(words["model_lines"]["resolution"].format(", ".join(sizes)))
    if document["assistant"]:
        lines.append(words["model_lines"]["assistant"].format(describe_assistant(document["assistant"])))
    thresholds = document["summary"]["thresholds"]
    return lines + [words["model_lines"]["threshold"].format(describe_thresholds(thresholds))] if thresholds else lines


def _template(name: str, autoescape: bool):
    from jinja2 import Environment, StrictUndefined

    environment = Environment(autoescape=autoescape, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return environment.from_string((prompts_dir() / name).read_text(encoding="utf-8"))


def render_html(document: dict, figures: Figures, options: ReportOptions = ReportOptions()) -> str:
    """A self-contained page: every picture embedded as a data URI."""
    def uri(data: bytes, kind: str) -> str:
        return f"data:image/{kind};base64," + base64.b64encode(data).decode("ascii")

    pictures = {k: tuple(uri(p, "jpeg") for p in pair) for k, pair in figures.pictures.items()}
    histogram = uri(figures.histogram, "png") if figures.histogram is not None else None
    return _template("report.html.j2", True).render(**_context(document, options), pictures=pictures,
                                                    histogram=histogram)


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
    text = _template("report.md.j2", True).render(**_context(document, options), pictures=pictures,
                                                   histogram=histogram)
    return text, files


def _latin1(text: str) -> str:
    """PDF core fonts cover Latin-1 only; keep the text readable rather than failing on a dash."""
    text = text.translate(str.maketrans({"\u2014": "-", "\u2013": "-", "\u2018": "'", "\u2019": "'",
                                         "\u201c": '"', "\u201d": '"', "\u2026": "...", "\u00a0": " "}))
    return text.encode("latin-1", "replace").decode("latin-1")


def render_pdf(document: dict, figures: Figures, options: ReportOptions = ReportOptions()) -> bytes:
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    context = _context(document, options)
    words = context["w"]
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(True, margin=15)
    pdf.set_title(_latin1(context["title"]))
    pdf.set_creator(_latin1(document["generator"]))
    pdf.add_page()
    width = pdf.epw

    def heading(text: str, size: int = 13) -> None:
        if pdf.get_y() > pdf.h - pdf.b_margin - 25:
            pdf.add_page()
        pdf.set_font("Helvetica", "B", size)
        pdf.cell(0, size * 0.6, _latin1(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(1)

    def paragraph(text: str, size: int = 10, style: str = "") -> None:
        pdf.set_font("Helvetica", style, size)
        pdf.multi_cell(0, size * 0.5, _latin1(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(1)

    def table(header: list[str], rows: list[list[str]], widths: tuple[int, ...]) -> None:
        pdf.set_font("Helvetica", "", 8)
        with pdf.table(col_widths=widths, text_align="LEFT", line_height=4.5, first_row_as_headings=True) as grid:
            for row in [header] + rows:
                cells = grid.row()
                for value in row:
                    cells.cell(_latin1(str(value)))
        pdf.ln(2)

    heading(context["title"], 16)
    paragraph(document["created"] + (f"  |  {context['counts']}" if document["kind"] == "batch" else ""), 9)
    if document["kind"] == "batch":
        heading(words["sections"]["summary"])
        if figures.histogram is not None:
            pdf.image(io.BytesIO(figures.histogram), w=min(width, 150))
        columns = words["batch_columns"]
        rows = [[str(n), item["image_id"], f"{item['image_score']:.3f}", words["verdict"][item["verdict"]],
                 str(len(item["regions"])), item["regions"][0]["location"] if item["regions"] else "-"]
                for n, item in enumerate(document["images"], 1)]
        heading(words["sections"]["table"])
        table([columns[k] for k in ("rank", "image", "score", "verdict", "regions", "where")], rows,
              (8, 60, 16, 40, 14, 30))
        if document["failures"]:
            heading(words["sections"]["failures"])
            for failure in document["failures"]:
                paragraph(f"{failure['path']}: {failure['error']}", 8)
    for item in context["details"]:
        if pdf.get_y() > pdf.h - 120:
            pdf.add_page()
        heading(f"{item['image_id']}: {words['verdict'][item['verdict']]}", 12)
        paragraph(context["score_line"](item), 9)
        if item["image_id"] in figures.pictures:
            top, half = pdf.get_y(), (width - 4) / 2
            image_width, image_height = figures.sizes[item["image_id"]]
            height = half * image_height / image_width
            if top + height > pdf.h - 20:
                pdf.add_page()
                top = pdf.get_y()
            for column, data in enumerate(figures.pictures[item["image_id"]]):
                pdf.image(io.BytesIO(data), x=pdf.l_margin + column * (half + 4), y=top, w=half)
            pdf.set_y(top + height + 2)
        columns = words["columns"]
        if item["regions"]:
            rows = [[str(n)] + _region_cells(item, r) for n, r in enumerate(item["regions"], 1)]
            keys = _region_columns(item)
            widths = (8, 30, 50, 30, 25, 25) if len(keys) == len(REGION_COLUMNS) else (6, 18, 30, 16, 14, 14, 70)
            table([columns[k] for k in keys], rows, widths)
        else:
            paragraph(words["no_regions"], 9, "I")
        if item["explanation"]:
            heading(words["sections"]["explanation"], 10)
            paragraph(item["explanation"], 9)
            for flag in item["flags"]:
                paragraph(f"! {flag}", 8, "I")
    heading(words["sections"]["models"], 10)
    for line in context["models"]:
        paragraph(line, 8)
    paragraph(words["model_lines"]["settings_elsewhere"], 7, "I")
    paragraph(context["footer"], 7, "I")
    return bytes(pdf.output())


def write_report(entries: list[ReportEntry], out: str | Path, name: str = "report", formats: tuple[str, ...] = FORMATS,
                 failures: list[dict] = (), settings: dict | None = None, assistant: dict | None = None,
                 options: ReportOptions = ReportOptions(), thresholds: Thresholds | None = None) -> dict[str, Path]:
    """Write the report in each format as `out/name.<ext>`, each file atomically; returns the paths."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown report format(s) {sorted(unknown)}; choose from {', '.join(FORMATS)}")
    out = Path(out)
    document = report_document(entries, failures, settings, assistant, thresholds=thresholds)
    figures = make_figures(entries, document, options)
    written = {}
    for fmt in formats:
        path = out / f"{name}.{fmt}"
        if fmt == "json":
            write_json(path, document)
        elif fmt == "html":
            write_text(path, render_html(document, figures, options))
        elif fmt == "md":
            text, files = render_markdown(document, figures, f"{name}_files", options)
            for relative, data in files.items():
                write_bytes(out / relative, data)
            write_text(path, text)
        else:
            write_bytes(path, render_pdf(document, figures, options))
        written[fmt] = path
    return written


def settings_of(config) -> dict:
    """The settings a report records: a dataclass config as plain JSON data."""
    return json.loads(json.dumps(asdict(config), default=str))


@dataclass
class ReportJob:
    """What `anomaly-vlm report` does: inspect `paths`, explain the worst, write the reports to `out`."""

    paths: list[str]
    out: Path
    formats: tuple[str, ...] = FORMATS
    explain: int = field(default=3, metadata={"help": "the assistant explains this many of the worst FAIL (then "
                                                      "REVIEW) images"})
    per_image: str = field(default="anomalous", metadata={"help": "none, anomalous (FAIL and REVIEW) or all: also "
                                                                  "one report per image"})
    details: int = field(default=10, metadata={"help": "images shown in full in the batch report"})


@dataclass
class ReportRun:
    batch: BatchRun
    written: dict[str, Path]
    assistant: dict | None


def run_report_job(inspector: Inspector, job: ReportJob, references: list[Image.Image] | None = None,
                   progress: bool = True, product: str | None = None) -> ReportRun:
    """Inspect (resumably, through the engine's records), explain the worst, write batch and per-image reports."""
    batch = inspector.inspect_batch(job.paths, job.out, references, progress=progress, product=product)
    entries = [ReportEntry(i, path=p) for i, p in zip(batch.inspections, batch.paths)]
    flagged = sorted((e for e in entries if e.inspection.verdict != "pass"),
                     key=lambda e: (e.inspection.verdict != "fail", -e.inspection.image_score))
    explained = flagged[: job.explain]
    explain_ids = {id(e) for e in explained}
    shown = sorted(entries, key=lambda e: -e.inspection.image_score)[: job.details]
    seen = list({id(e): e for e in explained + shown}.values())
    for entry in seen:    # measured looks where a reader sees them; images kept until the figures are drawn
        if (image := _picture(entry)) is not None:
            attach_image(entry.inspection, image)
            if id(entry) in explain_ids:
                entry.explanation, entry.flags = inspector.explain(entry.inspection)
    assistant = inspector.assistant.describe() if job.explain and flagged else None
    settings = settings_of(inspector.config)
    options = ReportOptions(details=job.details)
    written = write_report(entries, job.out, "report", job.formats, batch.failures, settings, assistant, options,
                           batch.thresholds)
    chosen = [e for e in entries if job.per_image == "all" or (job.per_image == "anomalous"
                                                              and e.inspection.verdict != "pass")]
    for entry in chosen:
        write_report([entry], job.out / "images", entry.inspection.image_id, job.formats, (), settings,
                     assistant if entry.explanation else None, options, batch.thresholds)
    for entry in seen:
        entry.inspection.image = None
    return ReportRun(batch, written, assistant)
