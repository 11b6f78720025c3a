"""Records that flow between the parts of the package."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
        return "__".join(p for p in parts if p not in ("", ".", ".."))
