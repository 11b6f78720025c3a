"""Speed and peak memory of training-free scoring (mutual, reference) on the built-in features.

Each configuration runs in its own process so its peak RSS is its own. Uses MVTec
bottle from ../shared/data when present (cycled to the requested count), else
synthetic parts.

    python benchmarks/training_free.py                       # 100 images at 256 and 518 px
    python benchmarks/training_free.py --images 200 --sizes 518 --modes mutual

Alongside, the figures measured before issue 16 (direct separable convolutions for the
filter bank, mutual scoring against every other image), on the 2-core build machine
while other jobs shared it (load average 4 to 10): they and today's figures are only
comparable when measured the same way.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

BEFORE = {  # (mode, size, shots) -> images/s, peak RSS MiB; 100 bottle test images, before issue 16
    ("mutual", 256, 4): (0.30, 1484),
    ("reference", 256, 4): (4.94, 1852),
    ("mutual", 518, 4): (0.53, 2110),
    ("reference", 518, 4): (0.63, 2188),
}

BOTTLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "mvtec_bottle" / "bottle"


def _images(count: int, split: str) -> list[Image.Image]:
    paths = sorted((BOTTLE / split).rglob("*.png")) if BOTTLE.is_dir() else []
    if paths:
        return [Image.open(paths[i % len(paths)]).convert("RGB") for i in range(count)]
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (900, 900, 3), dtype=np.uint8)) for _ in range(count)]


def run_one(mode: str, size: int, count: int, shots: int) -> dict:
    from anomaly_vlm.localizer import BuiltinFeatureConfig, BuiltinFeatures, MutualScorer, ReferenceScorer

    source = BuiltinFeatures(BuiltinFeatureConfig(image_size=size))
    images = _images(count, "test")
    start = time.perf_counter()
    if mode == "mutual":
        MutualScorer(source, progress=False).score(images)
    else:
        ReferenceScorer(source, progress=False).fit(_images(shots, "train/good")).score(images)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "size": size, "images": count, "seconds": seconds, "images_per_s": count / seconds, "peak_rss_mib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 518])
    parser.add_argument("--modes", nargs="+", default=["mutual", "reference"], choices=["mutual", "reference"])
    parser.add_argument("--shots", type=int, default=4, help="reference images in reference mode")
    parser.add_argument("--one", nargs=2, metavar=("MODE", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), args.images, args.shots)))
        return
    print(f"{'mode':<10} {'size':>5} {'images':>6} {'seconds':>8} {'img/s':>7} {'peak RSS':>10} {'before: img/s':>14} {'peak RSS':>9}")
    for size in args.sizes:
        for mode in args.modes:
            command = [sys.executable, __file__, "--one", mode, str(size), "--images", str(args.images), "--shots", str(args.shots)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                print(f"{mode:<10} {size:>5} failed: {done.stderr.strip().splitlines()[-1]}")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            before = BEFORE.get((mode, size, args.shots if mode == "reference" else 4))
            was = f"{before[0]:>14.2f} {before[1]:>5.0f} MiB" if before else f"{'-':>14} {'-':>9}"
            print(f"{r['mode']:<10} {r['size']:>5} {r['images']:>6} {r['seconds']:>8.1f} {r['images_per_s']:>7.2f} "
                  f"{r['peak_rss_mib']:>6.0f} MiB {was}", flush=True)


if __name__ == "__main__":
    main()
