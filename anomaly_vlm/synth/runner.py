"""Run a recipe: draw every sample, write it atomically, resume where a run stopped.

Sample i is drawn from its own generator, seeded with (seed, i), so the output does
not depend on the number of workers or on which samples an earlier run finished.
The files form an MVTec-style category (`<category>/test/<defect>/`, masks under
`ground_truth/`), so `train-prompts` and `score` read a synthesized set as is; a
JSON record per sample, written last, marks it done.
"""

from __future__ import annotations

import contextlib
import functools
import json
import multiprocessing
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from ..errors import DatasetError
from ..files import write_json, write_png, sweep_temporaries
from ..io import NORMAL_DEFECT, is_category_root, is_image_file, load_image
from .conversations import Phrasebook, build_conversation
from .findings import simulate_findings
from .foreground import estimate_foreground
from .ground_truth import ground_truth
from .notes import draw_notes
from .recipe import Recipe
from .simulators import SimulationContext, simulate, visible_change
from .textures import FolderTextures, ProceduralTextures, TextureSource, procedural_normal

MANIFEST = "manifest.json"
SAMPLES = "samples"
SOURCE_CACHE = 256
"""Decoded source images kept per worker: a category's normal photos are reused many times."""


@dataclass(frozen=True)
class SourceImage:
    path: Path
    category: str


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "item"


def _images_below(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if is_image_file(p))


def find_sources(path: str | Path) -> list[SourceImage]:
    """Normal images under `path`: a category root's train/good, every category of a dataset root, or a folder.

    A folder named `train/good` takes its category's name; any other folder its own.
    """
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{path}: source folder not found")
    roots = [path] if is_category_root(path) else sorted(p for p in path.iterdir() if is_category_root(p))
    if roots:
        found = [SourceImage(p, _slug(root.name)) for root in roots for p in _images_below(root / "train" / NORMAL_DEFECT)]
        if not found:
            raise DatasetError(f"{path}: no normal images in {', '.join(str(r / 'train' / NORMAL_DEFECT) for r in roots)}")
        return found
    name = path.parent.parent.name if (path.name, path.parent.name) == (NORMAL_DEFECT, "train") else path.name
    found = [SourceImage(p, _slug(name)) for p in _images_below(path)]
    if not found:
        raise DatasetError(f"{path}: no images in this folder")
    return found


def _resize_longer(image: np.ndarray, side: int) -> np.ndarray:
    height, width = image.shape[:2]
    scale = side / max(height, width)
    if scale == 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


@dataclass
class Drawn:
    """One sample before it is written."""

    image: np.ndarray
    mask: np.ndarray
    record: dict = field(default_factory=dict)


class Synthesizer:
    """Draws samples of one recipe; built once per worker process."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.sources = find_sources(recipe.source.path) if recipe.source.kind == "folder" else []
        self.by_category: dict[str, list[SourceImage]] = {}
        for source in self.sources:
            self.by_category.setdefault(source.category, []).append(source)
        self.textures: TextureSource = FolderTextures(recipe.textures) if recipe.textures else ProceduralTextures()
        self.configs = recipe.simulator_configs()
        weights = np.array([choice.weight for choice in recipe.simulators.values()], dtype=float)
        self.names, self.weights = list(self.configs), weights / weights.sum()
        self.book = Phrasebook()
        self._source = functools.lru_cache(maxsize=SOURCE_CACHE)(self._read_source)

    def _read_source(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        image = _resize_longer(np.asarray(load_image(path)), self.recipe.source.image_size)
        image.flags.writeable = False
        foreground = estimate_foreground(image, self.recipe.source.content)
        return image, foreground

    def _object_name(self, category: str, kind: str) -> str:
        if self.recipe.source.object_name:
            return self.recipe.source.object_name
        if self.recipe.source.kind == "procedural":
            return "part" if kind == "object" else "surface"
        return category.replace("_", " ")

    def _normal(self, rng: np.random.Generator):
        """The normal image, where defects may go, another normal image for NSA, and provenance."""
        source = self.recipe.source
        if source.kind == "procedural":
            kind = source.content if source.content != "mixed" else str(rng.choice(["object", "texture"]))
            image = procedural_normal(rng, source.image_size, kind)
            foreground = estimate_foreground(image, kind)
            other = functools.partial(procedural_normal, rng, source.image_size, kind)
            return image, foreground, other, self.recipe.name, kind, "procedural"
        chosen = self.sources[rng.integers(len(self.sources))]
        image, foreground = self._source(chosen.path)
        peers = [s for s in self.by_category[chosen.category] if s.path != chosen.path]

        def other() -> np.ndarray:
            peer, _ = self._source(peers[rng.integers(len(peers))].path)
            return peer if peer.shape == image.shape else cv2.resize(peer, image.shape[1::-1])

        return image, foreground, other if peers else None, chosen.category, source.content, str(chosen.path)

    def draw(self, index: int) -> Drawn:
        recipe = self.recipe
        rng = np.random.default_rng([recipe.seed, index])
        normal, foreground, other, category, kind, origin = self._normal(rng)
        image, mask, types = normal, np.zeros(normal.shape[:2], dtype=bool), []
        if rng.random() >= recipe.normal_ratio:
            context = SimulationContext(rng, foreground, self.textures, other)
            low, high = recipe.defects_per_image
            defects = []
            for _ in range(int(rng.integers(low, high + 1))):
                name = self.names[rng.choice(len(self.names), p=self.weights)]
                defect = simulate(name, image, context, self.configs[name])
                image, mask = defect.image, mask | defect.mask
                defects.append(defect)
            # A later defect can undo an earlier one; the label is what differs from the normal image.
            mask, _ = visible_change(normal, image, mask)
            image = np.where(mask[..., None], image, normal)
            types = [d.defect_type for d in defects if (d.mask & mask).any()]
        truth = ground_truth(normal, image, mask, types)
        height, width = image.shape[:2]
        findings = simulate_findings(truth, (width, height), rng, recipe.findings, image=image, mask=mask)
        object_name = self._object_name(category, kind)
        notes = draw_notes(truth, object_name, rng, self.book, recipe.conversation)
        if notes is not None:
            findings = replace(findings, notes=notes.text)
        conversation = build_conversation(truth, findings, object_name, rng, self.book, recipe.conversation, notes)
        folder = _slug(truth.defect_types[0]) if truth.anomalous else NORMAL_DEFECT
        name = f"{index:06d}"
        record = {
            "id": name,
            "index": index,
            "category": category,
            "object": object_name,
            "label": int(truth.anomalous),
            "source": origin,
            "image": f"{category}/test/{folder}/{name}.png",
            "mask": f"{category}/ground_truth/{folder}/{name}_mask.png" if truth.anomalous else None,
            "size": [width, height],
            "defect_types": truth.defect_types,
            "ground_truth": truth.to_dict(),
            "findings": findings.to_dict(),
            "messages": conversation.messages,
            "intents": conversation.intents,
        }
        return Drawn(image, mask, record)


def write_sample(out: Path, drawn: Drawn) -> None:
    """Image, then mask, then the record: a record on disk means its files are complete."""
    record = drawn.record
    write_png(out / record["image"], cv2.cvtColor(drawn.image, cv2.COLOR_RGB2BGR))
    if record["mask"]:
        write_png(out / record["mask"], drawn.mask.astype(np.uint8) * 255)
    write_json(out / SAMPLES / f"{record['id']}.json", record)


def read_record(out: Path, index: int) -> dict | None:
    """The finished record of sample `index`, or None if it is missing or incomplete."""
    path = out / SAMPLES / f"{index:06d}.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = [record.get("image")] + ([record["mask"]] if record.get("mask") else [])
    return record if all(f and (out / f).is_file() for f in files) else None


_worker: tuple[Synthesizer, Path] | None = None


def _start_worker(recipe: Recipe, out: Path) -> None:
    global _worker
    _worker = (Synthesizer(recipe), out)


def _run_one(index: int) -> tuple[int, str | None]:
    """Draw and write one sample; a failure is reported, not raised, so the batch goes on."""
    assert _worker is not None, "worker not started"
    synthesizer, out = _worker
    try:
        write_sample(out, synthesizer.draw(index))
        return index, None
    except Exception as exc:  # noqa: BLE001 - any one sample's failure must not stop the others
        return index, f"{type(exc).__name__}: {exc}"


def _check_manifest(out: Path, recipe: Recipe) -> None:
    """Resuming is only sound with the same recipe and seed; the sample count may change."""
    # Compared as JSON sees it: tuples come back from the file as lists.
    settings = json.loads(json.dumps({k: v for k, v in recipe.to_dict().items() if k != "num"}))
    path = out / MANIFEST
    if path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            raise DatasetError(f"{path}: unreadable manifest; delete {out} to start over") from None
        if previous.get("recipe") != settings:
            raise DatasetError(f"{out}: holds samples of another recipe or seed (see {path}); "
                               f"choose another --out or delete it")
    write_json(path, {"format": 1, "recipe": settings})


@dataclass
class SynthResult:
    out: Path
    records: list[dict]
    drawn: int
    """Samples drawn by this run; the rest of `records` were already on disk."""
    failures: list[dict]


def synthesize(recipe: Recipe, out: str | Path, workers: int = 1, progress: bool = True) -> SynthResult:
    """Draw the samples of `recipe` that `out` does not hold yet, with `workers` processes."""
    global _worker
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_manifest(out, recipe)
    sweep_temporaries(out)
    # Built here first, so a bad source or texture folder fails before any worker starts.
    synthesizer = Synthesizer(recipe)
    pending = [i for i in range(recipe.num) if read_record(out, i) is None]
    bar = tqdm(total=len(pending), desc="synthesizing", unit="sample", disable=not progress, file=sys.stderr)
    failures = []
    with contextlib.ExitStack() as stack:
        if workers <= 1 or len(pending) <= 1:
            _worker = (synthesizer, out)
            results = map(_run_one, pending)
        else:
            # spawn, not fork: the caller may hold threads (torch, tokenizers) that fork would copy mid-lock.
            pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_start_worker, initargs=(recipe, out))
            results = stack.enter_context(pool).imap_unordered(_run_one, pending, chunksize=4)
        for index, error in results:
            bar.update()
            if error:
                failures.append({"index": index, "error": error})
    bar.close()
    records = [r for r in (read_record(out, i) for i in range(recipe.num)) if r is not None]
    failures.sort(key=lambda f: f["index"])
    return SynthResult(out, records, len(pending) - len(failures), failures)
