"""Localizer speed and memory: bare CLIP `encode_image` vs the full localizer.

Random weights (timing does not depend on them). Each model runs in its own
process so peak memory is its own. Prints a table; `--json` for machines.

    python benchmarks/localizer.py                      # CPU, ViT-B-16 and ViT-L-14-336 at 518 px
    python benchmarks/localizer.py --device cuda --precision bf16 --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

MODELS = ("ViT-B-16", "ViT-L-14-336")


def measure(name: str, size: int, device: str, precision: str, batch: int, repeats: int) -> dict:
    import torch

    from anomaly_vlm.clip import BackboneConfig, load_backbone
    from anomaly_vlm.localizer import Localizer, PromptEnsemble

    torch.manual_seed(0)
    backbone = load_backbone(BackboneConfig(name=name, weights="none", image_size=size, device=device, precision=precision))
    localizer = Localizer(backbone, PromptEnsemble()).eval()
    localizer.text_features()  # text is encoded once per run, not per image
    images = torch.randn(batch, 3, backbone.image_size, backbone.image_size, device=backbone.device, dtype=backbone.dtype)

    def timed(fn) -> float:
        with torch.inference_mode():
            fn()  # warm-up
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
        return (time.perf_counter() - start) / (repeats * batch) * 1000

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    bare = timed(lambda: backbone.model.encode_image(images))
    full = timed(lambda: localizer.predict(images))
    result = {
        "model": name, "image_size": backbone.image_size, "device": device, "precision": precision, "batch": batch,
        "bare_ms": bare, "localizer_ms": full, "ratio": full / bare, "images_per_s": 1000 / full,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if device.startswith("cuda"):
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--image-size", type=int, default=518)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.image_size, args.device, args.precision, args.batch_size, args.repeats)))
        return
    rows = []
    for name in args.models:
        command = [sys.executable, __file__, "--one", name, "--image-size", str(args.image_size), "--device", args.device,
                   "--precision", args.precision, "--batch-size", str(args.batch_size), "--repeats", str(args.repeats)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{name} failed:\n{done.stderr}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    header = f"{'model':<14} {'size':>5} {'device':>6} {'prec':>5} {'batch':>5} {'encode ms/img':>14} {'localizer ms/img':>17} {'ratio':>6} {'img/s':>7} {'peak RSS MiB':>13}"
    print(header)
    for r in rows:
        print(f"{r['model']:<14} {r['image_size']:>5} {r['device']:>6} {r['precision']:>5} {r['batch']:>5} "
              f"{r['bare_ms']:>14.1f} {r['localizer_ms']:>17.1f} {r['ratio']:>6.2f} {r['images_per_s']:>7.2f} "
              f"{r['peak_rss_mib']:>13.0f}" + (f"  peak GPU {r['peak_gpu_mib']:.0f} MiB" if "peak_gpu_mib" in r else ""))


if __name__ == "__main__":
    main()
