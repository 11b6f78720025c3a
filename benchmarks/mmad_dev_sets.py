"""Dev question sets in MMAD's file format for the real images in ../shared/data.

MMAD itself is too large to keep here, so `eval-mmad` is exercised on questions made
from what these datasets do know: folder names (good or which defect) and, for
KolektorSDD, pixel masks. The answers are facts of the data, never a model's guess:

- every test image: Anomaly Detection (Yes/No) and Object Classification;
- every defective image: Defect Classification (the folder's kind in plain words
  against distractor kinds);
- with a mask (KolektorSDD): Defect Localization (the 3x3 grid cell, in the words of
  `anomaly_vlm.vocabulary.LOCATIONS`, of the largest component's box centre, as
  the localizer's regions name theirs) and Defect Description (shape and tone measured
  on the largest component: elongation of its pixel spread, mean grey inside against
  a ring around it).

Normal images get the detection and object questions only, as in MMAD. Templates are
normal train/good images of the same product: `similar_templates` nearest first by a
grey thumbnail distance (MMAD retrieves similar ones), `random_templates` a seeded draw.
Options are shuffled per question with a seed drawn from the image and question type,
so adding an image does not reshuffle the others. Files go outside the repository:

    python benchmarks/mmad_dev_sets.py --data /work/shared/data --out /tmp/mmad-dev
    anomaly-vlm eval-mmad --data /tmp/mmad-dev/kolektorsdd.json --root /work/shared/data --out /tmp/mmad/k
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from anomaly_vlm.io import read_category
from anomaly_vlm.proposals import grid_location
from anomaly_vlm.vocabulary import LOCATIONS

REPO = Path(__file__).resolve().parents[1]
SETS = {"mvtec_bottle": "bottle", "kolektorsdd": "kolektorsdd"}
"""Dataset folder under --data -> its one category folder."""

PRODUCTS = {"bottle": "a glass bottle seen from above", "kolektorsdd": "an electrical commutator surface"}
OTHER_PRODUCTS = ["a metal screw", "a cable cross-section", "a hazelnut", "a printed circuit board", "a pill",
                  "a piece of woven fabric", "a metal nut", "a zipper", "a wooden board", "a capsule"]
KINDS = {"broken_large": "a large break", "broken_small": "a small chip", "contamination": "contamination",
         "crack": "a crack"}
OTHER_KINDS = ["a scratch", "a crack", "a missing part", "a hole", "a dent", "a stain", "a bent edge"]
LOOKS = ["a thin elongated dark line", "a thin elongated bright line", "a small round dark spot",
         "a small round bright spot", "a faint discoloured patch", "a torn edge with missing material"]
ELONGATED = 3.0   # ratio of the pixel spread's principal axes above which a component reads as a line
CONTRAST = 12.0   # grey levels between inside and the ring around it below which the tone is "discoloured"
TEMPLATES = 5

QUESTIONS = {
    "Anomaly Detection": "Is there any defect in the object?",
    "Defect Classification": "There is a defect in the object. What is the type of the defect?",
    "Defect Localization": "There is a defect in the object. Where is the defect?",
    "Defect Description": "There is a defect in the object. What does the defect look like?",
    "Object Classification": "What kind of product is shown in the image?",
}


def _question(kind: str, correct: str, distractors: list[str], rng: random.Random, count: int = 4) -> dict:
    """An MMAD question: the correct text among distractors, shuffled, lettered A, B, ..."""
    pool = [d for d in dict.fromkeys(distractors) if d != correct]
    choices = [correct] + rng.sample(pool, min(count - 1, len(pool)))
    rng.shuffle(choices)
    options = {chr(65 + i): text for i, text in enumerate(choices)}
    return {"Question": QUESTIONS[kind], "Answer": chr(65 + choices.index(correct)), "Options": options,
            "type": kind}


def _largest(mask: np.ndarray) -> np.ndarray | None:
    labels, count = ndimage.label(mask)
    if not count:
        return None
    sizes = ndimage.sum(mask, labels, range(1, count + 1))
    return labels == (int(np.argmax(sizes)) + 1)


def location_of(component: np.ndarray) -> str:
    """The grid cell of the component's box centre (proposals.make_region names regions the same way)."""
    ys, xs = np.nonzero(component)
    height, width = component.shape
    return grid_location((xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2, width, height)


def look_of(component: np.ndarray, grey: np.ndarray) -> str:
    """Shape (elongation of the pixel spread) and tone (inside against a ring around it) in words."""
    ys, xs = np.nonzero(component)
    spread = np.sort(np.linalg.eigvalsh(np.cov(np.stack([xs, ys]).astype(float)))) if len(xs) > 2 else (1, 1)
    elongated = np.sqrt(spread[1] / max(spread[0], 1e-6)) >= ELONGATED
    ring = ndimage.binary_dilation(component, iterations=15) & ~component
    difference = grey[component].mean() - grey[ring].mean()
    if abs(difference) < CONTRAST:
        return "a faint discoloured patch"
    tone = "dark" if difference < 0 else "bright"
    return f"a thin elongated {tone} line" if elongated else f"a small round {tone} spot"


def _thumb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L").resize((48, 48), Image.BILINEAR), dtype=np.float32) / 255


def build_set(data: Path, name: str, seed: int = 0) -> dict:
    """The MMAD entries of one dataset, keyed by image path relative to `data`."""
    category = data / name / SETS[name]
    goods = sorted((category / "train" / "good").iterdir())
    goods = [p for p in goods if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp")]
    thumbs = np.stack([_thumb(p) for p in goods])
    product = PRODUCTS[SETS[name]]
    entries = {}
    for sample in read_category(category, "test"):
        key = sample.path.relative_to(data).as_posix()
        rng = lambda kind: random.Random(f"{seed}:{key}:{kind}")  # noqa: E731 - one stream per question
        anomalous = bool(sample.label)
        conversation = [_question("Anomaly Detection", "Yes." if anomalous else "No.", ["Yes.", "No."],
                                  rng("Anomaly Detection"), 2)]
        mask_path = ""
        if anomalous:
            kind = KINDS.get(sample.defect, sample.defect.replace("_", " "))
            conversation.append(_question("Defect Classification", kind,
                                          [KINDS[d] for d in _defects(category) if d in KINDS] + OTHER_KINDS,
                                          rng("Defect Classification")))
            if sample.mask_path is not None:
                mask = np.asarray(Image.open(sample.mask_path).convert("L")) > 127
                component = _largest(mask)
                if component is not None:
                    grey = np.asarray(Image.open(sample.path).convert("L").resize(mask.shape[::-1]), dtype=float)
                    where = location_of(component)
                    conversation.append(_question("Defect Localization", f"the {where} of the image",
                                                  [f"the {w} of the image" for w in LOCATIONS],
                                                  rng("Defect Localization")))
                    conversation.append(_question("Defect Description", look_of(component, grey), LOOKS,
                                                  rng("Defect Description")))
                prefix = Path(data, *key.split("/")[:3])  # MMAD's mask_path is relative to this folder
                mask_path = os.path.relpath(sample.mask_path, prefix).replace(os.sep, "/")
        conversation.append(_question("Object Classification", product, OTHER_PRODUCTS, rng("Object Classification")))
        distance = ((thumbs - _thumb(sample.path)) ** 2).mean(axis=(1, 2))
        similar = [goods[i] for i in np.argsort(distance, kind="stable")[:TEMPLATES]]
        drawn = random.Random(f"{seed}:{key}:templates").sample(goods, min(TEMPLATES, len(goods)))
        entries[key] = {"image_path": key, "conversation": conversation, "mask_path": mask_path,
                        "similar_templates": [p.relative_to(data).as_posix() for p in similar],
                        "random_templates": [p.relative_to(data).as_posix() for p in drawn]}
    return entries


def _defects(category: Path) -> list[str]:
    return sorted(p.name for p in (category / "test").iterdir() if p.is_dir() and p.name != "good")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the folder holding mvtec_bottle/ and kolektorsdd/")
    parser.add_argument("--out", type=Path, required=True, help="output folder, outside the repository")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if out == REPO or REPO in out.parents:
        print(f"error: {out} is inside the repository; real-data question sets stay outside it", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    for name in SETS:
        if not (args.data / name / SETS[name]).is_dir():
            print(f"skipped {name}: no {args.data / name / SETS[name]}", file=sys.stderr)
            continue
        entries = build_set(args.data.resolve(), name, args.seed)
        path = out / f"{name}.json"
        path.write_text(json.dumps(entries, indent=1) + "\n", encoding="utf-8")
        counts: dict[str, int] = {}
        for entry in entries.values():
            for question in entry["conversation"]:
                counts[question["type"]] = counts.get(question["type"], 0) + 1
        print(f"{path}: {len(entries)} images; " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
