"""Writing reports: render the document in each format to files, and the `anomaly-vlm report` job.

The job is where the Inspector meets the report: it inspects a batch, has the assistant
explain the worst images, then writes the batch report and one report per image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..files import write_bytes, write_json, write_text
from ..inspector import BatchRun, Inspector, attach_image
from ..verdicts import Thresholds
from .context import ReportOptions
from .document import ReportEntry, report_document, settings_of
from .figures import load_picture, make_figures
from .html import render_html
from .markdown import render_markdown
from .pdf import render_pdf

FORMATS = ("html", "md", "json", "pdf")


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
        if (image := load_picture(entry)) is not None:
            attach_image(entry.inspection, image, inspector.config.proposals)
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
