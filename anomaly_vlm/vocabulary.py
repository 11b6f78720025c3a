"""The words every output shares: verdicts, grid locations and defect kinds.

Renderers, the assistant, the synthesized training data and the CLI take their words
from here, so a part that FAILs in the terminal does not read "anomalous" in the
report, and a model is tuned on the very location and defect words it is checked on.
"""

from __future__ import annotations

from typing import Literal

Verdict = Literal["pass", "review", "fail"]
VERDICTS: tuple[Verdict, ...] = ("pass", "review", "fail")

VERDICT_WORDS: dict[str, str] = {"pass": "PASS", "review": "REVIEW", "fail": "FAIL"}
"""How a verdict is shown to people."""

VERDICT_MEANINGS: dict[str, str] = {
    "pass": "no anomaly found",
    "review": "uncertain: a person should look",
    "fail": "anomaly found",
}

LOCATIONS: tuple[str, ...] = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)
"""The cells of a 3x3 grid over the image, row by row: where a region's centre lies, in words."""

DEFECT_TYPES: tuple[str, ...] = (
    "scratch",
    "crack",
    "hole",
    "stain",
    "contamination",
    "missing material",
    "discoloration",
    "misplaced material",
    "scar",
    "foreign material",
)
"""The kinds of defect the simulators draw and the assistant names."""

REGION_COLUMNS: tuple[str, ...] = ("number", "location", "box", "size", "peak", "mean", "looks")
"""The columns of a region table, wherever one is shown (their headers: `columns` in prompts/report.yaml)."""


def region_row(number: int, region: dict) -> dict[str, str]:
    """One region (`Region.to_dict()`) as every table shows it: report, app and terminal print the same cells."""
    from .attributes import RegionAttributes

    attributes = region.get("attributes")
    return {"number": str(number), "location": region["location"], "box": ", ".join(map(str, region["box"])),
            "size": f"{100 * region['area_fraction']:.2f}", "peak": f"{region['peak_score']:.2f}",
            "mean": f"{region['mean_score']:.2f}",
            "looks": RegionAttributes.from_dict(attributes).describe(short=True) if attributes else "-"}


def score_text(value: float) -> str:
    """A score as people read it: two decimals, up to four where two would round it to 0 or 1.

    Good parts of a product whose scores saturate calibrate to thresholds like 0.9994,
    which at two decimals read "FAIL at 1.00" and hide what decides the verdict.
    """
    value = float(value)
    for digits in (2, 3, 4):
        text = f"{value:.{digits}f}"
        if not 0.0 < value < 1.0 or float(text) not in (0.0, 1.0):
            return text
    return text
