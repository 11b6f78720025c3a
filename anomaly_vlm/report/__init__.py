"""Defect reports for production: one image or a batch, as HTML, Markdown, JSON and PDF.

Every format renders the same JSON document, so what the PDF says is what the JSON says.

- `document`: the JSON-ready document (`report_document`), its entries and schema
  (`SCHEMA_PATH`, `anomaly_vlm/report_schema.json`).
- `context`: rendering options and what every renderer draws from the document
  (wording from `prompts/report.yaml`, region cells, model lines).
- `figures`: the pictures, encoded once for every format.
- `html`, `markdown`, `pdf`: the renderers (layouts in `prompts/report.*.j2`).
- `job`: writing the files (`write_report`) and the `anomaly-vlm report` job.
"""

from __future__ import annotations

from .context import ReportOptions
from .document import SCHEMA_PATH, ReportEntry, report_document, settings_of
from .figures import make_figures
from .html import render_html
from .job import FORMATS, ReportJob, run_report_job, write_report
from .markdown import render_markdown

__all__ = ["FORMATS", "SCHEMA_PATH", "ReportEntry", "ReportJob", "ReportOptions", "make_figures", "render_html",
           "render_markdown", "report_document", "run_report_job", "settings_of", "write_report"]
