"""Exact ground truth of a simulated sample: regions, types, size, severity, location."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..proposals import regions_from_mask
from ..types import Region

SEVERITIES = ("minor", "moderate", "severe")


@dataclass
class GroundTruth:
    """What the answers of a conversation are built from. Normal samples have no regions."""

    defect_types: list[str] = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)
    area_fraction: float = 0.0
    contrast: float = 0.0
    severity: str | None = None

    @property
    def anomalous(self) -> bool:
        return bool(self.regions)

    @property
    def locations(self) -> list[str]:
        """Distinct grid locations of the regions, largest region first."""
        return list(dict.fromkeys(r.location for r in self.regions))

    def to_dict(self) -> dict:
        return {"defect_types": self.defect_types, "regions": [r.to_dict() for r in self.regions],
                "area_fraction": round(self.area_fraction, 6), "contrast": round(self.contrast, 4),
                "severity": self.severity}


def severity_grade(area_fraction: float, contrast: float) -> str:
    """Minor / moderate / severe from how much of the part is affected and how visible it is.

    Size dominates (a large defect is severe even when faint); 5 % of the image or a
    mean colour change of 80 grey levels saturates each term.
    """
    size = min(area_fraction / 0.05, 1.0)
    visibility = min(contrast / 80.0, 1.0)
    grade = 0.6 * size ** 0.5 + 0.4 * visibility
    return SEVERITIES[0] if grade < 0.4 else SEVERITIES[1] if grade < 0.75 else SEVERITIES[2]


def ground_truth(original: np.ndarray, defective: np.ndarray, mask: np.ndarray, defect_types: list[str]) -> GroundTruth:
    if not mask.any():
        return GroundTruth()
    difference = np.abs(defective.astype(np.int16) - original.astype(np.int16)).max(axis=2)
    area = float(mask.mean())
    contrast = float(difference[mask].mean())
    return GroundTruth(list(dict.fromkeys(defect_types)), regions_from_mask(mask), area, contrast,
                       severity_grade(area, contrast))
