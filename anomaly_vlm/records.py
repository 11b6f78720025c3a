"""The one per-image record store: what a scorer said about an image, keyed by all that decided it.

A record holds only what does not depend on the threshold (the score, the named
scores, the float16 map), so verdicts, labels and regions are derived on reading: a
new threshold relabels without rescoring, while other references, prompts, weights
or image bytes give another fingerprint and are scored afresh.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .files import atomic_path, write_json

FORMAT_VERSION = 1


@dataclass
class ImageRecord:
    """One image's threshold-free result."""

    fingerprint: str
    path: str
    image_digest: str
    score: float
    image_size: tuple[int, int]
    scores: dict[str, float] = field(default_factory=dict)
    modes: tuple[str, ...] = ()
    models: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, **asdict(self), "image_size": list(self.image_size),
                "modes": list(self.modes)}

    @classmethod
    def from_dict(cls, data: dict) -> ImageRecord:
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"record format {data.get('format_version')!r}, expected {FORMAT_VERSION}")
        return cls(data["fingerprint"], data["path"], data["image_digest"], float(data["score"]),
                   tuple(data["image_size"]), {k: float(v) for k, v in data["scores"].items()},
                   tuple(data["modes"]), dict(data["models"]))


class RecordStore:
    """`<folder>/<fingerprint>.npy` (the map, float16, read without pickle) and `.json` (written last).

    A record on disk is complete: the map is renamed into place before its JSON.
    Content addressing means a renamed or moved image still finds its record.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def _paths(self, fingerprint: str) -> tuple[Path, Path]:
        return self.folder / f"{fingerprint}.json", self.folder / f"{fingerprint}.npy"

    def get(self, fingerprint: str) -> tuple[ImageRecord, np.ndarray] | None:
        record_path, map_path = self._paths(fingerprint)
        try:
            record = ImageRecord.from_dict(json.loads(record_path.read_text()))
            if record.fingerprint != fingerprint:
                return None
            return record, np.load(map_path, allow_pickle=False).astype(np.float32)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, record: ImageRecord, anomaly_map: np.ndarray) -> None:
        record_path, map_path = self._paths(record.fingerprint)
        with atomic_path(map_path) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, np.asarray(anomaly_map, dtype=np.float16))
        write_json(record_path, record.to_dict())
