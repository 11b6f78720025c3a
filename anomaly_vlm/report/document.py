"""The report document: the one JSON-ready record every format renders.

Building it once and rendering it everywhere keeps the PDF, HTML and Markdown saying
exactly what `report.json` says; the JSON follows `report_schema.json`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from ..types import Inspection
from ..verdicts import Thresholds, count_verdicts

SCHEMA_VERSION = 2
SCHEMA_PATH = Path(__file__).parent.parent / "report_schema.json"


@dataclass
class ReportEntry:
    """One inspected image as a report shows it: the inspection and what the assistant said about it."""

    inspection: Inspection
    path: str | None = None
    explanation: str | None = None
    flags: list[str] = field(default_factory=list)


def package_version() -> str:
    """The installed anomaly-vlm version, for the generator line and footer."""
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
        "generator": f"anomaly-vlm {package_version()}",
        "summary": {"total": len(entries) + len(failures), **count_verdicts([e.inspection.verdict for e in entries]),
                    "unreadable": kinds.count("unreadable"), "unscored": kinds.count("unscored"),
                    "errors": len(failures), "thresholds": thresholds.to_dict() if thresholds else None},
        "settings": settings or {},
        "assistant": assistant,
        "images": images,
        "failures": [{"path": str(f["path"]), "error": str(f["error"]), "kind": f.get("kind", "unreadable")}
                     for f in failures],
    }


def settings_of(config) -> dict:
    """The settings a report records: a dataclass config as plain JSON data."""
    return json.loads(json.dumps(asdict(config), default=str))
