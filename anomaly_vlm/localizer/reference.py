"""Reference scoring (few-shot): nearest-neighbour distance to a memory bank of normal patches.

The bank holds every patch of k known-good images and of their flips and rotations
(parts are photographed in varying poses), subsampled by greedy coreset when large.
Distances are put on a common scale by leave-one-out: each reference scored against
the bank of the others shows how far normal patches typically are.

A fitted scorer is its banks: `state()` gives them as tensors plus JSON (what a
product profile stores), `from_state` rebuilds it without the images.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import torch
from PIL import Image

from ..digests import images_digest
from ..errors import AnomalyVLMError, CheckpointError
from .distance_maps import DistanceMapConfig, Standardizer, extract_all, finish_maps, normalize_scale
from .features import FeatureSource
from .neighbours import as_patches, greedy_coreset, nearest_distance, neighbourhood_average
from .scorer import Prediction, z_to_unit

STATE_VERSION = 1

AUGMENTATIONS = {
    "hflip": lambda x: x.flip(-1),
    "vflip": lambda x: x.flip(-2),
    "rot90": lambda x: x.rot90(1, dims=(-2, -1)),
    "rot180": lambda x: x.rot90(2, dims=(-2, -1)),
    "rot270": lambda x: x.rot90(3, dims=(-2, -1)),
}


QUARTER_TURNS = ("rot90", "rot270")


def check_augmentations(names: tuple[str, ...]) -> None:
    unknown = set(names) - set(AUGMENTATIONS)
    if unknown:
        raise ValueError(f"unknown augmentations {sorted(unknown)}; choose from {', '.join(AUGMENTATIONS)}")


def shape_preserving(names: tuple[str, ...], size: tuple[int, int]) -> tuple[str, ...]:
    """The augmentations that keep a working image of `size` its shape: quarter turns only for squares.

    A tall part turned on its side is no longer the part the camera sees, and its
    grid would not line up with the others.
    """
    return tuple(name for name in names if size[0] == size[1] or name not in QUARTER_TURNS)


@dataclass
class ReferenceConfig(DistanceMapConfig):
    midpoint: float = field(default=4.3, metadata={"help": "z scored 0.5 (F1-best on MVTec bottle, 4 shots)"})
    augmentations: tuple[str, ...] = field(default=("hflip", "vflip", "rot90"), metadata={"help": f"reference augmentations: {', '.join(AUGMENTATIONS)}"})
    coreset_ratio: float = field(default=0.1, metadata={"help": "share of the bank's patches kept by greedy coreset (PatchCore): 0.1 scores MVTec bottle as the whole bank does (image AUROC 0.953 vs 0.954, 8 shots), 4x faster; 1 keeps all"})
    max_bank: int = field(default=16384, metadata={"help": "most patches kept per neighbourhood size, whatever the ratio (16 references at 2.5:1 stay under it)"})


@dataclass
class _Bank:
    patches: torch.Tensor  # (M, C)
    owner: torch.Tensor  # (M,) index of the reference image each patch came from
    normal: torch.Tensor  # leave-one-out distances of reference patches: the normal scale


def _json(data: dict) -> dict:
    """`data` as it reads back from JSON (tuples become lists), so stored and live values compare equal."""
    return json.loads(json.dumps(data))


class ReferenceScorer:
    mode = "reference"

    def __init__(self, source: FeatureSource, config: ReferenceConfig = ReferenceConfig(), progress: bool = True):
        check_augmentations(config.augmentations)
        if not 0 < config.coreset_ratio <= 1:
            raise ValueError(f"coreset_ratio is a share of the bank in (0, 1], got {config.coreset_ratio}")
        self.source = source
        self.config = config
        self.progress = progress
        self.banks: list[_Bank] = []
        self.num_references = 0
        self.references_digest: str | None = None
        self.grid: tuple[int, int] = (0, 0)
        self.size: tuple[int, int] = (source.image_size, source.image_size)

    def _augmented_features(self, references: list[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of the references and of each augmentation, with the reference index of each."""
        tensors = torch.stack([self.source.preprocess(image, self.size) for image in references])
        variants = [tensors] + [AUGMENTATIONS[name](tensors) for name in shape_preserving(self.config.augmentations, self.size)]
        features, owners = [], []
        for variant in variants:
            for start in range(0, len(variant), self.config.batch_size):
                features.append(self.source.extract(variant[start : start + self.config.batch_size]).float().cpu())
            owners.append(torch.arange(len(references)))
        return torch.cat(features), torch.cat(owners)

    def fit(self, references: list[Image.Image]) -> ReferenceScorer:
        if not references:
            raise AnomalyVLMError("reference scoring needs at least one normal reference image")
        self.size = self.source.working_size(references)
        features, owners = self._augmented_features(references)
        self.standardizer = Standardizer(features, self.source.standardize)
        features = self.standardizer(features)
        self.num_references = len(references)
        self.references_digest = images_digest(references)
        self.grid = (features.shape[2], features.shape[3])
        self.banks = []
        for size in self.config.neighbourhoods:
            patches = as_patches(neighbourhood_average(features, size))
            flat = patches.reshape(-1, patches.shape[-1])
            owner = owners.repeat_interleave(patches.shape[1])
            keep = greedy_coreset(flat, min(self.config.max_bank, max(1, math.ceil(self.config.coreset_ratio * len(flat)))))
            bank = _Bank(flat[keep], owner[keep], torch.empty(0))
            bank.normal = self._leave_one_out(bank, patches[: self.num_references])
            self.banks.append(bank)
        return self

    def _leave_one_out(self, bank: _Bank, originals: torch.Tensor) -> torch.Tensor:
        """Each reference's patches (R, N, C) scored against the bank without it; empty for one reference.

        Block j of the result is measured against patches owned by the other references
        only (augmentations share their reference's owner); `leave_one_out()` relies on it.
        """
        if self.num_references < 2:
            return torch.empty(0)
        return torch.cat([nearest_distance(originals[j], bank.patches[bank.owner != j]) for j in range(self.num_references)])

    def score(self, images: list[Image.Image], object_name: str | None = None) -> Prediction:
        if not self.banks:
            raise AnomalyVLMError("reference scoring: call fit() with normal reference images first")
        features = self.standardizer(extract_all(self.source, images, self.size, self.config.batch_size, "reference features", self.progress))
        grid = features.shape[2:]
        total = torch.zeros(len(images), *grid)
        for size, bank in zip(self.config.neighbourhoods, self.banks):
            patches = as_patches(neighbourhood_average(features, size))
            distances = nearest_distance(patches.reshape(-1, patches.shape[-1]), bank.patches)
            # With one reference there is no leave-one-out scale; the scored set stands in for it.
            normal = bank.normal if len(bank.normal) else distances
            total += normalize_scale(distances, normal).view(len(images), *grid)
        anomaly_map, map_max = finish_maps(total / len(self.banks), self.size, self.config)
        image_score = z_to_unit(map_max, self.config.midpoint, self.config.width)
        return Prediction(anomaly_map, image_score, {"reference_map_max_z": map_max}, (self.mode,))

    def leave_one_out(self) -> Prediction:
        """Each reference scored as a new image against the bank without its own patches.

        Held-out scores of known-good images: what thresholds are calibrated on at a
        target false-alarm rate. The distances are the bank's leave-one-out ones (block j
        of `normal` is reference j against the others' patches and augmentations), and
        they are scaled against the other references' blocks only, so a reference sees
        neither its own patches nor its own distances. Maps and scores then follow
        `score()` exactly.
        """
        if not self.banks:
            raise AnomalyVLMError("reference scoring: call fit() with normal reference images first")
        count = self.num_references
        if count < 2:
            raise AnomalyVLMError(f"leave-one-out scoring needs at least 2 references; this bank has {count}")
        total = torch.zeros(count, *self.grid)
        for bank in self.banks:
            blocks = bank.normal.view(count, -1)
            for j in range(count):
                others = torch.cat([blocks[:j], blocks[j + 1 :]]).flatten()
                total[j] += normalize_scale(blocks[j], others).view(self.grid)
        anomaly_map, map_max = finish_maps(total / len(self.banks), self.size, self.config)
        image_score = z_to_unit(map_max, self.config.midpoint, self.config.width)
        return Prediction(anomaly_map, image_score, {"reference_map_max_z": map_max}, (self.mode,))

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Tensors and JSON meta that rebuild this fitted scorer without its images (see `from_state`)."""
        if not self.banks:
            raise AnomalyVLMError("reference scoring: call fit() with normal reference images first")
        tensors: dict[str, torch.Tensor] = {}
        for index, bank in enumerate(self.banks):
            tensors[f"banks.{index}.patches"] = bank.patches.contiguous()
            tensors[f"banks.{index}.owner"] = bank.owner.contiguous()
            tensors[f"banks.{index}.normal"] = bank.normal.contiguous()
        if self.standardizer.enabled:
            tensors["standardizer.mean"] = self.standardizer.mean.contiguous()
            tensors["standardizer.std"] = self.standardizer.std.contiguous()
        meta = {
            "format_version": STATE_VERSION,
            "mode": self.mode,
            "config": _json(asdict(self.config)),
            "source": _json(self.source.describe()),
            "num_references": self.num_references,
            "references_digest": self.references_digest,
            "grid": list(self.grid),
            "size": list(self.size),
        }
        return tensors, meta

    @classmethod
    def from_state(cls, source: FeatureSource, tensors: dict[str, torch.Tensor], meta: dict, progress: bool = True) -> ReferenceScorer:
        """Rebuild a fitted scorer from `state()`; refuses a feature source other than the one it was fitted with.

        Distances between features of another backbone, layer set or patch grid mean
        nothing against this bank, so that is an error, not a silent rescale.
        """
        version = meta.get("format_version")
        if not isinstance(version, int) or version > STATE_VERSION:
            raise CheckpointError(f"reference bank format version {version!r} is not one this anomaly_vlm reads (up to {STATE_VERSION}); upgrade it")
        stored, live = meta.get("source", {}), _json(source.describe())
        if stored != live:
            differs = ", ".join(f"{key}: bank {stored.get(key)!r}, now {live.get(key)!r}"
                                for key in sorted(set(stored) | set(live)) if stored.get(key) != live.get(key))
            raise CheckpointError(f"this reference bank was built with other features ({differs}); "
                                  "score with the feature settings it was built with, or rebuild it from its references")
        try:
            settings = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()}
            scorer = cls(source, ReferenceConfig(**settings), progress)
            scorer.num_references = int(meta["num_references"])
            scorer.references_digest = meta["references_digest"]
            scorer.grid = (int(meta["grid"][0]), int(meta["grid"][1]))
            scorer.size = tuple(int(side) for side in meta.get("size", scorer.size))
            scorer.banks = [
                _Bank(tensors[f"banks.{i}.patches"], tensors[f"banks.{i}.owner"], tensors[f"banks.{i}.normal"])
                for i in range(len(scorer.config.neighbourhoods))
            ]
            patches = scorer.grid[0] * scorer.grid[1]
            for i, bank in enumerate(scorer.banks):
                if len(bank.owner) != len(bank.patches) or len(bank.normal) not in (0, scorer.num_references * patches):
                    raise ValueError(f"bank {i} tensor sizes")
            # Standardizer computes its statistics from features; here they are restored instead.
            scorer.standardizer = Standardizer(torch.empty(0), False)
            if source.standardize:
                scorer.standardizer.enabled = True
                scorer.standardizer.mean, scorer.standardizer.std = tensors["standardizer.mean"], tensors["standardizer.std"]
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise CheckpointError(f"malformed reference bank state (missing or bad {exc})") from None
        return scorer

    def describe(self) -> dict:
        return {
            "mode": self.mode,
            **self.source.describe(),
            "references": self.num_references,
            "references_digest": self.references_digest,
            "working_size": list(self.size),
            "augmentations": list(shape_preserving(self.config.augmentations, self.size)),
            "neighbourhoods": list(self.config.neighbourhoods),
        }
