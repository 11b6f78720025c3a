"""The `anomaly-vlm` command. Parsing only: the work lives in the library."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import AnomalyVLMError


def _backbone_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("backbone")
    group.add_argument("--backbone", help="open_clip architecture (default ViT-L-14-336), hf-hub:ORG/REPO or local-dir:PATH")
    group.add_argument("--weights", help="pretrained tag (default openai), checkpoint file or folder, or 'none' for random weights")
    group.add_argument("--image-size", type=int, help="input side in pixels (default 518)")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    group.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    group.add_argument("--layers", type=lambda s: tuple(int(x) for x in s.split(",")), help="1-based tapped blocks, e.g. 6,12,18,24")


def _backbone_overrides(args: argparse.Namespace) -> dict:
    return {"name": args.backbone, "weights": args.weights, "image_size": args.image_size,
            "device": args.device, "precision": args.precision}


def _localizer_config(args: argparse.Namespace, compat: bool = False):
    from .localizer import LocalizerConfig

    return LocalizerConfig(layers=args.layers, compat=compat) if args.layers else None


def _fusion_weights(text: str) -> dict[str, float]:
    weights = {}
    for item in text.split(","):
        mode, _, value = item.partition("=")
        try:
            weights[mode.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected MODE=WEIGHT pairs like prompt=1,mutual=0.5, got {item!r}") from None
    return weights


def _load_references(paths: list[str], shots: int | None) -> list:
    from .errors import DatasetError
    from .io import collect_samples, load_image

    images = []
    for sample in collect_samples(paths)[:shots]:
        try:
            images.append(load_image(sample.path))
        except AnomalyVLMError as exc:
            print(f"skipped reference: {exc}", file=sys.stderr)
    if not images:
        raise DatasetError(f"no usable reference images in {', '.join(paths)}")
    return images


def cmd_score(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .io import collect_samples
    from .localizer import DEFAULT_WEIGHTS, FusionConfig, ScorerOptions, build_scorer
    from .scoring import ScoreConfig, format_metrics, score_samples

    samples = collect_samples(args.paths)
    references = _load_references(args.references, args.shots) if args.references else None
    options = ScorerOptions(
        mode=args.mode, features=args.features, prompts=args.prompts, backbone=_backbone_overrides(args),
        localizer=_localizer_config(args), image_score=args.image_score,
        batch_size=args.batch_size, fusion=FusionConfig({**DEFAULT_WEIGHTS, **(args.fusion_weights or {})}),
    )
    built = build_scorer(options, references)
    for notice in built.notices:
        print(notice, file=sys.stderr)
    models = built.scorer.describe()
    print(f"scoring {len(samples)} images, mode {models['mode']}: {_summary(models)}", file=sys.stderr)
    config = replace(ScoreConfig(), threshold=args.threshold, save_maps=not args.no_maps)
    run = score_samples(built.scorer, samples, args.out, config)
    print(f"scored {len(run.results)} images -> {args.out}/scores.csv, results.json" + (", maps/" if config.save_maps else ""))
    if run.metrics:
        print(format_metrics(run.metrics))
    for failure in run.failures:
        print(f"failed: {failure['path']}: {failure['error']}", file=sys.stderr)
    return 1 if run.failures else 0


def _summary(models: dict) -> str:
    """One line naming the models behind a scorer's description."""
    parts = models.get("parts", [models])
    described = []
    for part in parts:
        if "prompts" in part:
            described.append(f"{part['mode']} ({part['backbone']}, {part['weights']}, {part['prompts']})")
        else:
            source = f"{part['backbone']} features" if part["features"] == "clip" else "built-in features"
            described.append(f"{part['mode']} ({source})")
    return " + ".join(described)


def cmd_train_prompts(args: argparse.Namespace) -> int:
    import torch

    from .io import read_dataset
    from .localizer import PromptCheckpoint, TrainConfig, build_localizer, train_prompts

    samples = [s for root in args.data for s in read_dataset(root, args.categories, args.split)]
    torch.manual_seed(args.seed)
    localizer = build_localizer(None, "prompt", _backbone_overrides(args), _localizer_config(args))
    backbone = localizer.backbone
    meta = PromptCheckpoint(
        backbone=backbone.name, weights=args.weights or "openai", image_size=backbone.image_size,
        text_width=backbone.text_width, prompt=localizer.text.config, localizer=localizer.config,
        source=f"trained on {', '.join(args.data)}",
    )
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    print(f"training prompts on {len(samples)} images "
          f"({sum(s.pixel_truth for s in samples)} with pixel ground truth)", file=sys.stderr)
    result = train_prompts(localizer, samples, args.out, meta, config, resume=args.resume)
    print(f"epoch losses: {', '.join(f'{x:.4f}' for x in result.epoch_losses)}")
    print(f"prompt checkpoint written to {result.checkpoint}")
    return 0


def cmd_import_prompts(args: argparse.Namespace) -> int:
    from .localizer import import_reference

    out = import_reference(args.file, args.out, backbone=args.backbone, weights=args.weights,
                           image_size=args.image_size, layers=args.layers)
    print(f"imported {args.file} -> {out} (compatibility mode on)")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from .errors import DatasetError
    from .synth.export import save_dataset, save_llava, save_preview
    from .synth.recipe import load_recipe
    from .synth.runner import synthesize

    recipe = load_recipe(args.recipe, num=args.num, seed=args.seed, source_path=args.source)
    source = recipe.source.path if recipe.source.kind == "folder" else f"procedural {recipe.source.content}"
    print(f"recipe {args.recipe}: {recipe.num} samples, seed {recipe.seed}, from {source}", file=sys.stderr)
    result = synthesize(recipe, args.out, workers=args.workers)
    for failure in result.failures:
        print(f"failed: sample {failure['index']}: {failure['error']}", file=sys.stderr)
    if not result.records:
        raise DatasetError(f"{args.out}: no sample could be drawn; see the failures above")
    outputs = [save_dataset(args.out, result.records), save_llava(args.out, result.records)]
    if args.preview:
        outputs.append(save_preview(args.out, result.records))
    anomalous = sum(r["label"] for r in result.records)
    print(f"{len(result.records)} samples ({anomalous} with defects; {result.drawn} drawn now, "
          f"{len(result.records) - result.drawn} already on disk) -> {', '.join(map(str, outputs))}")
    return 1 if result.failures else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anomaly-vlm", description="Industrial anomaly inspection with CLIP and LLMs.")
    commands = parser.add_subparsers(dest="command", required=True)

    score = commands.add_parser("score", help="zero-shot anomaly scores, heatmaps and metrics for images")
    score.add_argument("paths", nargs="+", help="images, folders, or MVTec/VisA category or dataset roots")
    score.add_argument("--out", required=True, type=Path, help="output folder")
    score.add_argument("--prompts", help="prompt checkpoint folder (train-prompts or import-prompts)")
    score.add_argument("--mode", choices=["prompt", "ensemble", "mutual", "reference", "fused"],
                       help="prompt: learned prompts (needs --prompts); ensemble: hand-crafted prompts; mutual: the images "
                            "score each other (zero-shot, no weights needed); reference: distance to --references; "
                            "fused: all that apply. Default: prompts (+ references), or without CLIP weights "
                            "reference/mutual on built-in features")
    score.add_argument("--references", nargs="+", help="known-good images or folders for reference (few-shot) scoring")
    score.add_argument("--shots", type=int, help="use only the first N reference images (in name order)")
    score.add_argument("--features", choices=["auto", "builtin", "clip"], default="auto",
                       help="patch features for mutual/reference: clip (when its weights load) or builtin (no download)")
    score.add_argument("--fusion-weights", type=_fusion_weights, help="e.g. prompt=1,ensemble=0.5,mutual=1,reference=1")
    score.add_argument("--image-score", choices=["global", "max", "blend"], help="image score: CLS feature, map maximum, or their mean")
    score.add_argument("--threshold", type=float, default=0.5, help="image score threshold for the label (default 0.5)")
    score.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    score.add_argument("--no-maps", action="store_true", help="skip heatmap overlays")
    _backbone_args(score)
    score.set_defaults(func=cmd_score)

    train = commands.add_parser("train-prompts", help="learn object-agnostic prompts on an auxiliary dataset")
    train.add_argument("--data", nargs="+", required=True, help="MVTec/VisA category or dataset roots")
    train.add_argument("--categories", nargs="*", help="only these categories of a dataset root")
    train.add_argument("--split", default="test", help="split folder to train on (default test, as AnomalyCLIP)")
    train.add_argument("--out", required=True, type=Path, help="checkpoint folder")
    train.add_argument("--epochs", type=int, default=15)
    train.add_argument("--batch-size", type=int, default=8)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--seed", type=int, default=111)
    train.add_argument("--resume", action="store_true", help="continue from the training state in --out")
    _backbone_args(train)
    train.set_defaults(func=cmd_train_prompts)

    imp = commands.add_parser("import-prompts", help="convert an AnomalyCLIP prompt checkpoint (.pth)")
    imp.add_argument("file", type=Path)
    imp.add_argument("--out", required=True, type=Path, help="checkpoint folder to write")
    imp.add_argument("--backbone", default="ViT-L-14-336")
    imp.add_argument("--weights", default="openai")
    imp.add_argument("--image-size", type=int, default=518)
    imp.add_argument("--layers", type=lambda s: tuple(int(x) for x in s.split(",")), default=(24,),
                     help="tapped blocks; AnomalyCLIP's published maps correspond to 24")
    imp.set_defaults(func=cmd_import_prompts)
    synth = commands.add_parser("synth", help="simulated defects and instruction conversations from a recipe")
    synth.add_argument("--recipe", required=True, type=Path, help="recipe YAML, e.g. data_recipes/objects.yaml")
    synth.add_argument("--out", required=True, type=Path, help="output folder; an interrupted run resumes here")
    synth.add_argument("--num", type=int, help="number of samples (default: the recipe's)")
    synth.add_argument("--seed", type=int, help="random seed (default: the recipe's)")
    synth.add_argument("--workers", type=int, default=min(8, len(os.sched_getaffinity(0))),
                       help="worker processes (default: the usable cores, at most 8)")
    synth.add_argument("--source", type=Path, help="folder of normal images, replacing the recipe's source")
    synth.add_argument("--preview", action="store_true", help="also write preview.png: samples with masks and boxes")
    synth.set_defaults(func=cmd_synth)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AnomalyVLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
