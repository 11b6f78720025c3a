"""Reference scoring's bank share (greedy coreset, PatchCore) against quality and speed on MVTec bottle.

For each share of the bank's patches kept, the image AUROC on the 83 test images
(chance 0.5) and the scoring speed, with 8 known-good references on built-in features
at 256 px. The default `ReferenceConfig.coreset_ratio` comes from this table.

    python benchmarks/coreset.py --ratios 1 0.25 0.1 0.05
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from anomaly_vlm.io import collect_samples, load_image, read_category
from anomaly_vlm.localizer import BuiltinFeatures, ReferenceConfig, ReferenceScorer
from anomaly_vlm.metrics import auroc

BOTTLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "mvtec_bottle" / "bottle"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[1.0, 0.25, 0.1, 0.05])
    parser.add_argument("--shots", type=int, default=8)
    args = parser.parse_args()
    samples = read_category(BOTTLE)
    images, labels = [load_image(s.path) for s in samples], np.array([s.label for s in samples])
    references = [load_image(s.path) for s in collect_samples([str(BOTTLE / "train" / "good")])[: args.shots]]
    source = BuiltinFeatures()
    print(f"MVTec bottle, {len(images)} test images, {args.shots} references, built-in features at 256 px")
    print(f"  {'share':>6} {'bank':>7} {'fit s':>6} {'img/s':>6} {'image AUROC':>12} (chance 0.5)")
    for ratio in args.ratios:
        start = time.perf_counter()
        scorer = ReferenceScorer(source, ReferenceConfig(coreset_ratio=ratio), progress=False).fit(references)
        fitted = time.perf_counter()
        scores = scorer.score(images).image_score
        done = time.perf_counter()
        print(f"  {ratio:>6.2f} {len(scorer.banks[0].patches):>7} {fitted - start:>6.1f} "
              f"{len(images) / (done - fitted):>6.2f} {auroc(labels, scores):>12.3f}", flush=True)


if __name__ == "__main__":
    main()
