"""Learn a product from its good train images, then score its test set.

Trains `anomaly_vlm.localizer.learned` on all of `<root>/train/good` (the holdout is
taken inside), scores `<root>/test`, and prints image AUROC, pixel AUROC and AUPRO
(when `ground_truth/` exists), the share of good test parts above the threshold
calibrated on the held-out good TRAIN images, the held-out simulation figures,
training time, peak RSS and chance levels. The test labels are used for these
figures only, never for choosing or calibrating anything.

    python benchmarks/learn_product.py --data ../shared/data/kolektorsdd/kolektorsdd \
        --out runs/learn-kolektor --image-size 256 --content texture
    python benchmarks/learn_product.py --data ../shared/data/mvtec_bottle/bottle \
        --out runs/learn-bottle --image-size 256 --content object
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="category root in the MVTec layout")
    parser.add_argument("--out", type=Path, required=True, help="where the model and its checkpoints go")
    parser.add_argument("--image-size", type=int, default=256, help="shorter side of the working image")
    parser.add_argument("--content", choices=["object", "texture"], default=None,
                        help="texture: defects anywhere, the textures recipe mix; object (default): on the "
                             "estimated part, the objects recipe mix")
    parser.add_argument("--recipe", type=Path, default=None,
                        help="a product recipe (data_recipes/) whose simulator mix the training draws")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--crop", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--holdout", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--features", action=argparse.BooleanOptionalAction, default=None,
                        help="feed the built-in filter-bank responses beside the pixels (default: on)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--false-alarm", type=float, default=0.05, help="target share of good parts failing")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from anomaly_vlm.io import load_image, load_mask, read_category
    from anomaly_vlm.localizer.learned import learn_product
    from anomaly_vlm.localizer.learned_config import LearnConfig, with_recipe
    from anomaly_vlm.synth.recipe import load_recipe
    from anomaly_vlm.metrics import auroc, pixel_metrics
    from anomaly_vlm.verdicts import prediction_bound

    if args.threads:
        torch.set_num_threads(args.threads)
    config = LearnConfig(image_size=args.image_size, content=args.content or "object")
    if args.recipe is not None:
        config = with_recipe(config, load_recipe(args.recipe, source_path=args.data))
    for name, value in (("steps", args.steps), ("batch_size", args.batch), ("crop", args.crop), ("width", args.width),
                        ("lr", args.lr), ("holdout", args.holdout), ("seed", args.seed), ("features", args.features),
                        ("content", args.content)):
        if value is not None:
            setattr(config, name, value)

    train = read_category(args.data, "train")
    good = [load_image(s.path) for s in train if s.label == 0]
    start = time.perf_counter()
    scorer = learn_product(good, args.out, config, progress=not args.quiet)
    wall = time.perf_counter() - start
    peak_train = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    test = read_category(args.data, "test")
    start = time.perf_counter()
    prediction = scorer.score([load_image(s.path) for s in test])
    score_seconds = time.perf_counter() - start
    labels = np.array([s.label for s in test])
    threshold = prediction_bound(scorer.holdout_scores, args.false_alarm)
    good_scores = prediction.image_score[labels == 0]
    figures = {
        "data": str(args.data),
        "working_size": list(scorer.size),
        "config": config.to_dict(),
        "train_images": len(good) - len(scorer.holdout_scores),
        "holdout_images": len(scorer.holdout_scores),
        "holdout_scores": [round(float(x), 4) for x in scorer.holdout_scores],
        "validation_on_holdout_simulations": scorer.record.get("validation"),
        "test_images": len(test),
        "test_defective": int(labels.sum()),
        "image_auroc": auroc(labels, prediction.image_score),
        "image_auroc_chance": 0.5,
        "threshold": threshold,
        "good_test_failing": float((good_scores >= threshold).mean()),
        "defective_test_caught": float((prediction.image_score[labels == 1] >= threshold).mean()),
        "train_seconds": scorer.record.get("train_seconds"),
        "learn_wall_seconds": wall,
        "score_seconds": score_seconds,
        "peak_rss_mib_after_training": peak_train,
        "weights_sha256": scorer.describe()["weights_sha256"],
    }
    if all(s.mask_path is not None for s in test if s.label):
        height, width = scorer.size
        masks = np.stack([load_mask(s.mask_path, (width, height)) if s.label else np.zeros((height, width), bool)
                          for s in test])
        pixels = pixel_metrics(masks, prediction.anomaly_map)
        figures.update({
            "pixel_auroc": pixels["pixel_auroc"],
            "pixel_auroc_chance": 0.5,
            "pixel_ap": pixels["pixel_ap"],
            "pixel_ap_chance": float(masks.mean()),
            "aupro": pixels["pixel_aupro"],
            # A random map overlaps each region by the false-positive rate: the PRO curve is the diagonal.
            "aupro_chance": 0.15,
        })
    figures["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
