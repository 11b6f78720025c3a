"""Mutual scoring against a bounded random sample of the other images: quality vs K, and cost vs N.

(a) Quality: image AUROC on MVTec bottle and KolektorSDD, pixel AUROC on KolektorSDD,
    for each sample size K (several seeds) and for the full comparison (K = 0). Each
    image's nearest-patch distances to every other image are computed once per dataset
    (both directions from one distance block), and each K then picks its columns: the
    same numbers `MutualScorer` computes, at the cost of one full comparison.
(b) Cost: seconds per image of `MutualScorer.score` for N images, full comparison and
    default K. N beyond the set's size repeats its images, each repeat shifted by a few
    pixels (and flipped on odd repeats), so no two are identical.

    python benchmarks/mutual_scaling.py                          # both parts
    python benchmarks/mutual_scaling.py --part quality --ks 4 8 16 32
    python benchmarks/mutual_scaling.py --part cost --counts 40 120 360
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageChops, ImageOps

from anomaly_vlm.digests import image_digest
from anomaly_vlm.io import load_image, load_mask, read_category
from anomaly_vlm.localizer import BuiltinFeatures, MutualConfig, MutualScorer
from anomaly_vlm.localizer.distance_maps import Standardizer, extract_all, finish_maps
from anomaly_vlm.localizer.neighbours import as_patches, neighbourhood_average
from anomaly_vlm.localizer.scorer import z_to_unit
from anomaly_vlm.metrics import auroc

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = {"bottle": DATA / "mvtec_bottle" / "bottle", "kolektorsdd": DATA / "kolektorsdd" / "kolektorsdd"}


class TableScorer(MutualScorer):
    """A MutualScorer that looks its image-to-image distances up in tables of all pairs."""

    def __init__(self, source, config, features: torch.Tensor):
        super().__init__(source, config, progress=False)
        self.tables = []  # per neighbourhood size: (patches (N, P, C), distances (N, P, N))
        for size in config.neighbourhoods:
            patches = as_patches(neighbourhood_average(features, size)).contiguous()
            self.tables.append((patches, all_pairs(patches)))

    def distances(self, patches, i, others):
        for cached, table in self.tables:
            if cached.shape == patches.shape and torch.equal(cached[0], patches[0]):
                return table[i][:, others]
        raise KeyError("patches not in the tables")


def all_pairs(patches: torch.Tensor, block: int = 4) -> torch.Tensor:
    """(N, P, N): distance from each patch of image i to its nearest patch of image j (diagonal: inf)."""
    count, size, channels = patches.shape
    norms = patches.square().sum(-1)
    out = torch.full((count, size, count), float("inf"))
    for a in range(0, count, block):
        rows = patches[a : a + block].reshape(-1, channels)
        for b in range(a, count, block):
            cols = patches[b : b + block].reshape(-1, channels)
            d = torch.addmm(norms[b : b + block].reshape(1, -1), rows, cols.T, alpha=-2)
            d = d.add_(norms[a : a + block].reshape(-1, 1)).view(-1, size, cols.shape[0] // size, size)
            forward = d.amin(dim=3).clamp_min(0).sqrt()      # (ia, P, jb): i's patches to j
            backward = d.amin(dim=1).clamp_min(0).sqrt()     # (ia, jb, P): j's patches to i
            for x in range(forward.shape[0]):
                for y in range(forward.shape[2]):
                    i, j = a + x, b + y
                    if i != j:
                        out[i, :, j] = forward[x, :, y]
                        out[j, :, i] = backward[x, y]
    return out


def finish(scorer: MutualScorer, features: torch.Tensor, keys: list[str], size: tuple[int, int]):
    """`MutualScorer.score` after feature extraction at working `size`: maps and image scores."""
    anomaly_map, map_max = finish_maps(scorer.patch_scores(features, keys), size, scorer.config)
    return anomaly_map, z_to_unit(scorer.rescore(map_max, features), scorer.config.midpoint, scorer.config.width)


def quality(ks: list[int], seeds: list[int]) -> None:
    source = BuiltinFeatures()
    config = MutualConfig()
    print("(a) quality vs K (built-in features, 256 px; K = 0 is the full comparison; "
          f"K > 0: mean [min, max] over seeds {seeds})")
    rows: dict[int, dict[str, list[float]]] = {}
    for name, root in SETS.items():
        if not root.is_dir():
            print(f"  {name}: not found at {root}; skipped")
            continue
        samples = read_category(root)
        images = [load_image(s.path) for s in samples]
        labels = np.array([s.label for s in samples])
        size = source.working_size(images)
        masks = None
        if samples[0].pixel_truth:
            masks = np.stack([load_mask(s.mask_path, size[::-1]) if s.mask_path else np.zeros(size, bool)
                              for s in samples])
        start = time.perf_counter()
        features = extract_all(source, images, size, config.batch_size, "features", False)
        features = Standardizer(features, source.standardize)(features)
        scorer = TableScorer(source, config, features)
        keys = [image_digest(image) for image in images]
        print(f"  {name}: {len(images)} images, all-pairs tables in {time.perf_counter() - start:.0f} s")
        for k in ks:
            for seed in (seeds if 0 < k < len(images) - 1 else seeds[:1]):
                scorer.config = replace(config, sample_size=k, seed=seed)
                maps, scores = finish(scorer, features, keys, size)
                row = rows.setdefault(k, {})
                row.setdefault(f"{name} image", []).append(auroc(labels, scores))
                if masks is not None:
                    row.setdefault(f"{name} pixel", []).append(auroc(masks.ravel(), maps.ravel()))
    columns = sorted({c for row in rows.values() for c in row}, key=lambda c: (c.split()[0] != "bottle", c))
    print(f"  {'K':>5} " + " ".join(f"{c:>24}" for c in columns))
    full = rows.get(0, {})
    for k in sorted(rows, key=lambda k: (k == 0, k)):
        cells = []
        for c in columns:
            v = rows[k].get(c, [])
            if not v:
                cells.append(f"{'-':>24}")
                continue
            delta = f" ({np.mean(v) - np.mean(full[c]):+.3f})" if c in full and k else ""
            cells.append(f"{np.mean(v):.3f} [{min(v):.3f},{max(v):.3f}]{delta}".rjust(24) if len(v) > 1
                         else f"{v[0]:.3f}{delta}".rjust(24))
        print(f"  {('full' if k == 0 else k):>5} " + " ".join(cells))


def repeated(images: list[Image.Image], count: int) -> list[Image.Image]:
    """`count` images: the set, then copies shifted by (r, 2r) px per repeat r (flipped on odd repeats)."""
    out = []
    for n in range(count):
        image, r = images[n % len(images)], n // len(images)
        if r:
            image = ImageChops.offset(image, r, 2 * r)
            image = ImageOps.mirror(image) if r % 2 else image
        out.append(image)
    return out


def cost(counts: list[int], full_limit: int) -> None:
    source = BuiltinFeatures()
    default = MutualConfig().sample_size
    base = [load_image(s.path) for s in read_category(SETS["bottle"])]
    print(f"(b) seconds per image of MutualScorer.score, MVTec bottle test ({len(base)} images; larger N repeats them "
          f"shifted), 256 px, {torch.get_num_threads()} threads")
    print(f"  {'N':>6} {'full s/img':>11} {f'K={default} s/img':>12} {'K=%d peak RSS' % default:>14}")
    import resource

    for count in counts:
        images = repeated(base, count)
        cells = []
        for k in (0, default):
            if k == 0 and count > full_limit:
                cells.append(f"{'(skipped)':>11}")
                continue
            scorer = MutualScorer(source, MutualConfig(sample_size=k), progress=False)
            start = time.perf_counter()
            scorer.score(images)
            cells.append(f"{(time.perf_counter() - start) / count:>11.3f}" if k == 0 else
                         f"{(time.perf_counter() - start) / count:>12.3f}")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"  {count:>6} {cells[0]} {cells[1]} {peak:>10.0f} MiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["quality", "cost", "both"], default="both")
    parser.add_argument("--ks", type=int, nargs="+", default=[4, 8, 16, 32, 0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--counts", type=int, nargs="+", default=[40, 120, 360])
    parser.add_argument("--full-limit", type=int, default=360, help="largest N also timed with the full comparison")
    args = parser.parse_args()
    if args.part in ("quality", "both"):
        quality(sorted(set(args.ks) | {0}), args.seeds)
    if args.part in ("cost", "both"):
        cost(args.counts, args.full_limit)


if __name__ == "__main__":
    main()
