"""Synthesis throughput: samples per second, images and masks written, at 512 px.

Runs data_recipes/objects.yaml on MVTec bottle train/good from ../shared/data when
present (else on drawn parts) and data_recipes/procedural.yaml, each with 1 and 2
workers, into a fresh temporary folder. The time covers drawing and writing the
samples (worker start-up included), not the dataset export, which is timed apart.

    python benchmarks/synth.py                  # 200 samples per run
    python benchmarks/synth.py --samples 500 --workers 1 2 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from anomaly_vlm.synth.export import save_dataset
from anomaly_vlm.synth.recipe import load_recipe
from anomaly_vlm.synth.runner import synthesize
from anomaly_vlm.synth.textures import procedural_normal

ROOT = Path(__file__).resolve().parents[1]
BOTTLE = ROOT.parent / "shared" / "data" / "mvtec_bottle" / "bottle" / "train" / "good"


def _object_photos(folder: Path) -> Path:
    if BOTTLE.is_dir():
        return BOTTLE
    folder.mkdir(parents=True)
    for i in range(30):
        Image.fromarray(procedural_normal(np.random.default_rng(i), 900, "object")).save(folder / f"{i:03d}.png")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        photos = _object_photos(work / "photos")
        print(f"objects source: {photos}")
        print(f"{'recipe':<12} {'workers':>7} {'samples':>7} {'seconds':>8} {'samples/s':>9} {'export s':>8}")
        for recipe_name, source in (("objects", photos), ("procedural", None)):
            for workers in args.workers:
                recipe = load_recipe(ROOT / "data_recipes" / f"{recipe_name}.yaml", num=args.samples, source_path=source)
                out = work / f"{recipe_name}-{workers}"
                start = time.perf_counter()
                result = synthesize(recipe, out, workers=workers, progress=False)
                seconds = time.perf_counter() - start
                start = time.perf_counter()
                save_dataset(out, result.records)
                export = time.perf_counter() - start
                print(f"{recipe_name:<12} {workers:>7} {result.drawn:>7} {seconds:>8.2f} "
                      f"{result.drawn / seconds:>9.1f} {export:>8.2f}")


if __name__ == "__main__":
    main()
