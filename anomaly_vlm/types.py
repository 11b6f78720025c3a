"""Records that flow between the parts of the package."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .attributes import RegionAttributes
from .files import safe_stem
from .vocabulary import Verdict, score_text


@dataclass(frozen=True)
class Sample:
    """One image to inspect, with whatever ground truth its dataset provides.

    `label` is 1 for anomalous, 0 for normal and None when unknown. `pixel_truth`
    says the dataset annotates pixels: then a normal image's mask is known to be
    empty and an anomalous one's is at `mask_path`.
    """

    path: Path
    label: int | None = None
    mask_path: Path | None = None
    category: str | None = None
    defect: str | None = None
    root: Path | None = None
    pixel_truth: bool = False

    @property
    def key(self) -> str:
        """A name that is unique within a run and safe as a file name."""
        relative = self.path.relative_to(self.root) if self.root else Path(self.path.parent.name, self.path.name)
        parts = ([self.category] if self.category else []) + list(relative.with_suffix("").parts)
        return safe_stem("__".join(p for p in parts if p not in ("", ".", "..")))


@dataclass(frozen=True)
class Region:
    """One anomalous region of an image: where it is, how big, how strongly it scored.

    `box` is (x0, y0, x1, y1) in pixels with exclusive ends; `box_norm` is the same
    divided by the image width and height. `location` is the 3x3 grid cell of the box
    centre in words ("top left" ... "center" ... "bottom right"). `attributes` is what
    the region looks like, measured from the image (shape, size, contrast, colour,
    texture); None when the image was not at hand.
    """

    box: tuple[int, int, int, int]
    box_norm: tuple[float, float, float, float]
    area_fraction: float
    location: str
    peak_score: float = 1.0
    mean_score: float = 1.0
    attributes: RegionAttributes | None = None

    def to_dict(self) -> dict:
        """JSON-ready data; `attributes` appears only when measured, so older readers see what they always saw."""
        data = {
            "box": list(self.box),
            "box_norm": [round(v, 4) for v in self.box_norm],
            "area_fraction": round(self.area_fraction, 6),
            "location": self.location,
            "peak_score": round(self.peak_score, 4),
            "mean_score": round(self.mean_score, 4),
        }
        if self.attributes is not None:
            data["attributes"] = self.attributes.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Region:
        attributes = data.get("attributes")
        return cls(tuple(data["box"]), tuple(data["box_norm"]), data["area_fraction"], data["location"],
                   data.get("peak_score", 1.0), data.get("mean_score", 1.0),
                   RegionAttributes.from_dict(attributes) if attributes else None)

    def looks(self) -> str:
        """The short phrase of what the region looks like, or "" when it was not measured."""
        return self.attributes.describe(short=True) if self.attributes is not None else ""


def verdict_of(score: float, threshold: float, review_threshold: float | None) -> Verdict:
    """pass, review or fail: at or above `threshold` fails, at or above `review_threshold` goes to a person."""
    if score >= threshold:
        return "fail"
    return "review" if review_threshold is not None and score >= review_threshold else "pass"


@dataclass
class Findings:
    """What the localizer reports about one image; the assistant answers from this."""

    image_score: float
    threshold: float
    regions: list[Region] = field(default_factory=list)
    review_threshold: float | None = None
    notes: str | None = None

    @property
    def anomalous(self) -> bool:
        return self.image_score >= self.threshold

    @property
    def verdict(self) -> Verdict:
        return verdict_of(self.image_score, self.threshold, self.review_threshold)

    def to_dict(self) -> dict:
        return {"image_score": round(self.image_score, 4), "threshold": self.threshold,
                "review_threshold": self.review_threshold, "regions": [r.to_dict() for r in self.regions],
                "notes": self.notes}

    @classmethod
    def from_dict(cls, data: dict) -> Findings:
        return cls(data["image_score"], data["threshold"], [Region.from_dict(r) for r in data["regions"]],
                   data.get("review_threshold"), data.get("notes"))

    def _score_line(self) -> str:
        score = f"image anomaly score: {score_text(self.image_score)}"
        if self.verdict == "review":
            return (f"{score} (between the review threshold {score_text(self.review_threshold)} and the fail threshold "
                    f"{score_text(self.threshold)}: uncertain, for a person to review)")
        return f"{score} ({'above' if self.anomalous else 'below'} the threshold {score_text(self.threshold)})"

    def block(self) -> str:
        """The findings as a delimited text block: data for the assistant to read, not instructions."""
        lines = ["<findings>", self._score_line()]
        if self.notes:
            lines.append(f"product notes: {' '.join(self.notes.split())}")
        lines.append(f"candidate regions: {len(self.regions)}")
        for i, r in enumerate(self.regions, 1):
            box = ", ".join(f"{v:.2f}" for v in r.box_norm)
            looks = f"; {r.looks()}" if r.attributes is not None else ""
            lines.append(f"{i}. {r.location}, box [{box}], {100 * r.area_fraction:.1f}% of the image, "
                         f"peak score {r.peak_score:.2f}{looks}")
        lines.append("</findings>")
        return "\n".join(lines)


@dataclass
class Inspection:
    """The outcome of inspecting one image: score, threshold and proposed regions, and which models made them.

    `image_size` (width, height) is the size the region boxes are in pixels of;
    `map_size` (width, height) the resolution the localizer worked at.
    Scores are stored at full precision so the label read back from JSON is the
    label that was written; regions round as `Findings` rounds them. `image` and
    `anomaly_map` travel along in memory (the assistant and reports need them) but
    are not part of the JSON record; reports and batch runs store them as PNG files.
    """

    image_id: str
    image_score: float
    threshold: float
    regions: list[Region]
    models: dict
    image_size: tuple[int, int] | None = None
    image: Any = field(default=None, repr=False, compare=False)
    anomaly_map: Any = field(default=None, repr=False, compare=False)
    review_threshold: float | None = None
    threshold_source: str = "fixed"
    notes: str | None = None
    map_size: tuple[int, int] | None = None

    @property
    def label(self) -> int:
        """1 when the part FAILs."""
        return int(self.image_score >= self.threshold)

    @property
    def verdict(self) -> Verdict:
        return verdict_of(self.image_score, self.threshold, self.review_threshold)

    @property
    def findings(self) -> Findings:
        return Findings(self.image_score, self.threshold, list(self.regions), self.review_threshold, self.notes)

    def to_dict(self) -> dict:
        return {"image_id": self.image_id, "image_score": self.image_score, "threshold": self.threshold,
                "review_threshold": self.review_threshold, "threshold_source": self.threshold_source,
                "verdict": self.verdict, "label": self.label, "regions": [r.to_dict() for r in self.regions],
                "models": dict(self.models), "image_size": None if self.image_size is None else list(self.image_size),
                "map_size": None if self.map_size is None else list(self.map_size), "notes": self.notes}

    @classmethod
    def from_dict(cls, data: dict) -> Inspection:
        size, map_size = data.get("image_size"), data.get("map_size")
        return cls(data["image_id"], data["image_score"], data["threshold"],
                   [Region.from_dict(r) for r in data["regions"]], dict(data["models"]),
                   None if size is None else tuple(size), review_threshold=data.get("review_threshold"),
                   threshold_source=data.get("threshold_source", "fixed"), notes=data.get("notes"),
                   map_size=None if map_size is None else tuple(map_size))
