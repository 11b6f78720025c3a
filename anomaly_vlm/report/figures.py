"""A report's pictures, encoded once and shared by every format.

Encoding is the slow part of a report; doing it once means the HTML, Markdown and PDF
embed the very same bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from ..errors import AnomalyVLMError
from ..io import load_image
from ..visualize import annotate, score_histogram
from .context import ReportOptions, detail_count
from .document import ReportEntry


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


def load_picture(entry: ReportEntry) -> Image.Image | None:
    """The entry's image: in memory, else read again from its file (batch runs do not keep images)."""
    if entry.inspection.image is None and entry.path:
        try:
            return load_image(entry.path)
        except AnomalyVLMError:
            return None
    return entry.inspection.image


def make_figures(entries: list[ReportEntry], document: dict, options: ReportOptions) -> Figures:
    """Original and overlay of each image shown in full, and the score histogram of a batch."""
    by_id = {e.inspection.image_id: e for e in entries}
    pictures, sizes = {}, {}
    for item in document["images"][: detail_count(document, options)]:
        entry = by_id[item["image_id"]]
        image = load_picture(entry)
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
