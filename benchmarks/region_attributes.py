"""Do region attributes tell defect kinds apart? Their distribution per defect folder on real images.

For each defect folder the strongest region of an inspection (reference scoring against
8 known-good images on the built-in features, as `anomaly-vlm score --references
.../train/good --shots 8 --features builtin` scores) is measured with
`anomaly_vlm.attributes.measure`; where the dataset has pixel masks (KolektorSDD) the
largest ground-truth component is measured too ("truth" rows), which shows what the
attributes say when the mask is exact rather than the localizer's, and the top regions
whose box touches the defect are shown apart ("on the defect"). The `good` folders
give the look of the strongest spot on normal images, the false alarms' look.

Prints, per folder and source, the share of each word per attribute and the median of
each number. Data from ../shared/data:

    OMP_NUM_THREADS=2 nice -n 10 python benchmarks/region_attributes.py
    OMP_NUM_THREADS=2 nice -n 10 python benchmarks/region_attributes.py --limit 10 --good 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from anomaly_vlm.attributes import CONTRASTS, HUES, ORIENTATIONS, SHAPES, SIZES, TEXTURES, measure
from anomaly_vlm.inspector import Inspector, InspectorConfig
from anomaly_vlm.io import is_image_file, load_image, load_mask
from anomaly_vlm.localizer import ScorerOptions

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = {
    "kolektorsdd": (DATA / "kolektorsdd" / "kolektorsdd", ("crack", "good")),
    "mvtec_bottle": (DATA / "mvtec_bottle" / "bottle", ("broken_large", "broken_small", "contamination", "good")),
}
WORDS = {"shape": SHAPES, "orientation": ORIENTATIONS + (None,), "size": SIZES, "contrast": CONTRASTS, "hue": HUES,
         "texture": TEXTURES}
NUMBERS = ("elongation", "solidity", "luminance_difference", "colour_shift", "texture_ratio")
SHOTS = 8


def _images(folder: Path, limit: int | None) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_image_file(p))[:limit]


def _largest_component(mask: np.ndarray) -> np.ndarray | None:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count < 2:
        return None
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def _truth(root: Path, defect: str, path: Path) -> tuple[dict | None, np.ndarray | None]:
    """The largest ground-truth component's attributes, and the whole mask (None, None without one)."""
    mask_path = root / "ground_truth" / defect / f"{path.stem}_mask.png"
    if not mask_path.is_file():
        return None, None
    image = np.asarray(load_image(path))
    mask = load_mask(mask_path, image.shape[1::-1])
    component = _largest_component(mask)
    return (None if component is None else measure(image, component).to_dict()), mask


def measure_set(inspector: Inspector, name: str, root: Path, folders: tuple[str, ...], limit: int | None,
                good: int) -> dict:
    references = [load_image(p) for p in _images(root / "train" / "good", SHOTS)]
    rows: dict[tuple[str, str], list[dict]] = {}
    for defect in folders:
        paths = _images(root / "test" / defect, min(good, limit or good) if defect == "good" else limit)
        start = time.perf_counter()
        for path in paths:   # one at a time: reference scoring does not compare test images with each other
            inspection = inspector.inspect(path, category=name, references=references, image_id=path.stem)
            truth, mask = _truth(root, defect, path) if defect != "good" else (None, None)
            top = inspection.regions[0] if inspection.regions else None
            if top is not None and top.attributes is not None:
                rows.setdefault((defect, "top region"), []).append(top.attributes.to_dict())
                x0, y0, x1, y1 = top.box
                if mask is not None and mask[y0:y1, x0:x1].any():
                    rows.setdefault((defect, "top region on the defect"), []).append(top.attributes.to_dict())
            if truth is not None:
                rows.setdefault((defect, "truth"), []).append(truth)
        print(f"  {name}/{defect}: {len(paths)} images in {time.perf_counter() - start:.0f} s", flush=True)
    return rows


def summary(rows: list[dict]) -> dict:
    words = {k: Counter(r[k] for r in rows) for k in WORDS}
    return {"n": len(rows),
            "words": {k: {str(w): round(c / len(rows), 2) for w, c in counts.most_common()} for k, counts in words.items()},
            "median": {k: round(float(np.median([r[k] for r in rows])), 2) for k in NUMBERS}}


def _cell(shares: dict[str, float], width: int = 3) -> str:
    return " ".join(f"{w} {round(100 * s)}%" for w, s in list(shares.items())[:width])


def print_table(results: dict[str, dict]) -> None:
    keys = list(WORDS)
    print("\n| folder | source | n | " + " | ".join(keys) + " | median elong. / solid. / dL* / dab / tex. |")
    print("|---|---|---:|" + "---|" * len(keys) + "---|")
    for label, s in results.items():
        folder, source = label.split(" · ")
        medians = " / ".join(f"{s['median'][k]:g}" for k in NUMBERS)
        print(f"| {folder} | {source} | {s['n']} | " + " | ".join(_cell(s["words"][k]) for k in keys)
              + f" | {medians} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="images per folder (default: all)")
    parser.add_argument("--good", type=int, default=20, help="normal images per set (default: 20)")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--json", type=Path, default=None, help="also write the summaries here")
    args = parser.parse_args()
    options = ScorerOptions(mode="reference", features="builtin", progress=False)
    inspector = Inspector(InspectorConfig(scorer=options))
    results = {}
    for name in args.sets:
        root, folders = SETS[name]
        for (defect, source), rows in measure_set(inspector, name, root, folders, args.limit, args.good).items():
            results[f"{name}/{defect} · {source}"] = summary(rows)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
