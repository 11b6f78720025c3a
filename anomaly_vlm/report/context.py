"""What every renderer draws from the document: wording, counts, region table rows and model lines.

HTML, Markdown and PDF lay the same context out differently; computing it here once is
what keeps their words and numbers the same. Wording comes from `prompts/report.yaml`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..templates import load_yaml, templates_dir
from ..verdicts import describe_thresholds
from ..vocabulary import REGION_COLUMNS, region_row
from .document import package_version



@dataclass
class ReportOptions:
    """How a report is drawn, the same for every format."""

    details: int = field(default=10, metadata={"help": "images shown in full in a batch report, worst first"})
    image_side: int = field(default=768, metadata={"help": "longest side of embedded pictures, in pixels"})
    title: str | None = field(default=None, metadata={"help": "report title (default from prompts/report.yaml)"})


def detail_count(document: dict, options: ReportOptions) -> int:
    """How many images, worst first, the report shows in full: all of a one-image report."""
    return len(document["images"]) if document["kind"] == "image" else options.details


def render_context(document: dict, options: ReportOptions) -> dict:
    """The values the layouts in `prompts/report.*.j2` (and the PDF) fill in."""
    words = load_yaml("report.yaml")
    title = options.title or (words["title"] if document["kind"] == "image" else words["batch_title"])
    summary = document["summary"]
    return {"doc": document, "w": words, "title": title,
            "details": document["images"][: detail_count(document, options)],
            "counts": words["counts"].format(
                total=summary["total"], fail=summary["fail"], review=summary["review"], passed=summary["pass"],
                errors=words["errors_part"].format(**summary) if summary["errors"] else ""),
            "footer": words["footer"].format(version=package_version(), created=document["created"]),
            "score_line": lambda item: words["score_line"].format(
                score=item["image_score"], threshold=item["threshold"],
                review=words["review_part"].format(review=item["review_threshold"])
                if item["review_threshold"] is not None else ""),
            "columns": region_columns,
            "region_cells": region_cells,
            "models": model_lines(document, words),
            "settings_json": json.dumps(document["settings"], indent=2)}


def _measured(item: dict) -> bool:
    """Whether any region of the image had its look measured (images kept in memory; not batch runs)."""
    return any(r.get("attributes") for r in item["regions"])


def region_columns(item: dict) -> tuple[str, ...]:
    """The region table's column keys: the look column only when some region has one."""
    return REGION_COLUMNS if _measured(item) else REGION_COLUMNS[:-1]


def region_cells(item: dict, region: dict) -> list[str]:
    """One region table row as text, in `region_columns` order after the number (the caller numbers rows)."""
    row = region_row(0, region)
    return [row[key] for key in region_columns(item)[1:]]


def model_lines(document: dict, words: dict) -> list[str]:
    """Which localizer(s) and assistant made the report, and the threshold, in a few readable lines."""
    from ..assistant.backends import describe_assistant
    from ..localizer import describe_models

    localizers = list(dict.fromkeys(describe_models(i["models"]) for i in document["images"] if i["models"]))
    lines = [words["model_lines"]["localizer"].format(name) for name in localizers]
    sizes = list(dict.fromkeys(f"{i['map_size'][0]}x{i['map_size'][1]}" for i in document["images"] if i.get("map_size")))
    if sizes:
        lines.append(words["model_lines"]["resolution"].format(", ".join(sizes)))
    if document["assistant"]:
        lines.append(words["model_lines"]["assistant"].format(describe_assistant(document["assistant"])))
    thresholds = document["summary"]["thresholds"]
    return lines + [words["model_lines"]["threshold"].format(describe_thresholds(thresholds))] if thresholds else lines


def template(name: str):
    """A Jinja layout from `prompts/`: autoescaped, so user text adds no markup; strict, so no value goes missing."""
    from jinja2 import Environment, StrictUndefined

    environment = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return environment.from_string((templates_dir() / name).read_text(encoding="utf-8"))
