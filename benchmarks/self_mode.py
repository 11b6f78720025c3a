"""Accuracy and speed of `self` scoring (each image alone) on the built-in features.

Scores every test image of MVTec bottle (image labels) and KolektorSDD (pixel masks)
from ../shared/data, one image at a time, and prints image AUROC for both, pixel AUROC
and AUPRO for KolektorSDD (masks resized to the map, nearest), seconds per image, and
the share of good and defective images scored 0.5 or more at the default midpoint.

Figures on data tuned on: the defaults (exclusion radius 2, copies hflip/vflip/rot90)
were chosen on MVTec bottle test image AUROC, so bottle's figures are optimistic;
KolektorSDD was not used to choose anything. The midpoint was set from bottle
train/good images (no test image): `--calibrate` rescores them and prints it.

    OMP_NUM_THREADS=1 python benchmarks/self_mode.py
    OMP_NUM_THREADS=1 python benchmarks/self_mode.py --calibrate --radius 3
"""

from __future__ import annotations

import argparse
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from anomaly_vlm.io import load_image, load_mask, read_category
from anomaly_vlm.localizer import build_feature_source
from anomaly_vlm.localizer.self_similarity import SelfConfig, SelfScorer
from anomaly_vlm.metrics import image_metrics, pixel_metrics

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = {"mvtec_bottle": DATA / "mvtec_bottle" / "bottle", "kolektorsdd": DATA / "kolektorsdd" / "kolektorsdd"}
CHANCE = 0.5
FALSE_ALARMS = 0.05  # the midpoint is the map-maximum z that this share of normal images exceeds


def score_each(scorer: SelfScorer, paths: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Maps, image scores, map-maximum z and seconds per image, scoring one image per call."""
    maps, scores, z, seconds = [], [], [], 0.0
    for path in paths:
        image = load_image(path)
        start = time.perf_counter()
        prediction = scorer.score([image])
        seconds += time.perf_counter() - start
        maps.append(prediction.anomaly_map[0])
        scores.append(prediction.image_score[0])
        z.append(prediction.scores["self_map_max_z"][0])
    return np.stack(maps), np.array(scores), np.array(z), seconds / len(paths)


def evaluate(name: str, root: Path, scorer: SelfScorer) -> None:
    samples = read_category(root)
    labels = np.array([s.label for s in samples])
    maps, scores, z, per_image = score_each(scorer, [s.path for s in samples])
    flagged = scores >= 0.5
    line = (f"{name:<13} {len(samples):>4} img ({labels.sum()} defective)  image AUROC {image_metrics(labels, scores)['image_auroc']:.3f}"
            f" (chance {CHANCE})")
    if samples[0].pixel_truth:
        size = maps.shape[1:][::-1]
        masks = np.stack([load_mask(s.mask_path, size) if s.mask_path else np.zeros(maps.shape[1:], bool) for s in samples])
        pixel = pixel_metrics(masks, maps)
        line += f"  pixel AUROC {pixel['pixel_auroc']:.3f} (chance {CHANCE})  AUPRO {pixel['pixel_aupro']:.3f}"
    line += f"  {per_image:.2f} s/img"
    print(line)
    print(f"{'':<13} at midpoint {scorer.config.midpoint}: {flagged[labels == 0].mean():.0%} of good and "
          f"{flagged[labels == 1].mean():.0%} of defective images score >= 0.5")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = SelfConfig()
    parser.add_argument("--radius", type=int, default=defaults.radius)
    parser.add_argument("--augmentations", nargs="*", default=list(defaults.augmentations))
    parser.add_argument("--midpoint", type=float, default=defaults.midpoint)
    parser.add_argument("--calibrate", action="store_true",
                        help=f"also score bottle train/good and print the z that {FALSE_ALARMS:.0%} of them exceed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = SelfConfig(radius=args.radius, augmentations=tuple(args.augmentations), midpoint=args.midpoint)
    scorer = SelfScorer(build_feature_source("builtin"), config, progress=False)
    settings = {f.name: getattr(config, f.name) for f in fields(config) if f.name in ("radius", "augmentations", "neighbourhoods", "midpoint")}
    print(f"self mode, built-in features, one image at a time, 1 thread; {settings}")
    print("figures on data tuned on: mvtec_bottle (radius and copies chosen on its test image AUROC, "
          "midpoint on its train/good); kolektorsdd held out")
    missing = [str(root) for root in SETS.values() if not root.is_dir()]
    if missing:
        raise SystemExit(f"missing data: {', '.join(missing)}")
    for name, root in SETS.items():
        evaluate(name, root, scorer)
    if args.calibrate:
        paths = sorted((SETS["mvtec_bottle"] / "train" / "good").glob("*.png"))
        _, _, z, _ = score_each(scorer, paths)
        print(f"calibration: {len(paths)} bottle train/good images, map-maximum z median {np.median(z):.2f}, "
              f"{1 - FALSE_ALARMS:.0%} quantile {np.quantile(z, 1 - FALSE_ALARMS):.2f} (the midpoint)")


if __name__ == "__main__":
    main()
