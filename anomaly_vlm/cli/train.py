"""The commands that make models and data: train-prompts, import-prompts, synth, tune and eval-chat."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AnomalyVLMError, DatasetError
from .options import BACKBONE, LANGUAGE_MODEL, ASSISTANT, Option, add_options, configured, given


@dataclass
class SynthOptions:
    """What `synth` takes beside its recipe: overrides of the recipe's own values, and how to run it."""

    num: int | None = field(default=None, metadata={"help": "number of samples (default: the recipe's)"})
    seed: int | None = field(default=None, metadata={"help": "random seed (default: the recipe's)"})
    source: Path | None = field(default=None, metadata={"help": "folder of normal images, replacing the recipe's source"})
    workers: int = field(default_factory=lambda: min(8, len(os.sched_getaffinity(0))),
                         metadata={"help": "worker processes (default: the usable cores, at most 8)"})
    preview: bool = field(default=False, metadata={"help": "also write preview.png: samples with masks and boxes"})


def cmd_train_prompts(args: argparse.Namespace) -> int:
    import torch

    from ..clip import BackboneConfig
    from ..io import read_dataset, usable_samples
    from ..localizer import LocalizerConfig, TrainConfig, build_localizer, train_prompts
    from ..localizer.checkpoint import checkpoint_meta

    samples, failures = usable_samples([s for root in args.data for s in read_dataset(root, args.categories, args.split)])
    for failure in failures:
        print(f"left out: {failure['error']}", file=sys.stderr)
    if not samples:
        raise AnomalyVLMError(f"no usable training images in {', '.join(args.data)}")
    config = configured(args, TrainConfig)
    torch.manual_seed(config.seed)
    layers = given(args, LocalizerConfig).get("layers")
    localizer = build_localizer(None, "prompt", given(args, BackboneConfig), LocalizerConfig(layers=layers) if layers else None)
    meta = checkpoint_meta(localizer, BackboneConfig(**given(args, BackboneConfig)).weights,
                           f"trained on {', '.join(args.data)}")
    print(f"training prompts on {len(samples)} images "
          f"({sum(s.pixel_truth for s in samples)} with pixel ground truth)", file=sys.stderr)
    result = train_prompts(localizer, samples, args.out, meta, config, resume=args.resume)
    print(f"epoch losses: {', '.join(f'{x:.4f}' for x in result.epoch_losses)}")
    print(f"prompt checkpoint written to {result.checkpoint}")
    return 1 if failures else 0


def cmd_import_prompts(args: argparse.Namespace) -> int:
    from ..localizer import import_reference

    out = import_reference(args.file, args.out, backbone=args.backbone, weights=args.weights,
                           image_size=args.image_size, layers=args.layers)
    print(f"imported {args.file} -> {out} (compatibility mode on)")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from ..synth.export import save_dataset, save_llava, save_preview
    from ..synth.recipe import load_recipe
    from ..synth.runner import synthesize

    options = configured(args, SynthOptions)
    recipe = load_recipe(args.recipe, num=options.num, seed=options.seed, source_path=options.source)
    source = recipe.source.path if recipe.source.kind == "folder" else f"procedural {recipe.source.content}"
    print(f"recipe {args.recipe}: {recipe.num} samples, seed {recipe.seed}, from {source}", file=sys.stderr)
    result = synthesize(recipe, args.out, workers=options.workers)
    for failure in result.failures:
        print(f"failed: sample {failure['index']}: {failure['error']}", file=sys.stderr)
    if not result.records:
        raise DatasetError(f"{args.out}: no sample could be drawn; see the failures above")
    outputs = [save_dataset(args.out, result.records), save_llava(args.out, result.records)]
    if options.preview:
        outputs.append(save_preview(args.out, result.records))
    anomalous = sum(r["label"] for r in result.records)
    print(f"{len(result.records)} samples ({anomalous} with defects; {result.drawn} drawn now, "
          f"{len(result.records) - result.drawn} already on disk) -> {', '.join(map(str, outputs))}")
    return 1 if result.failures else 0


def cmd_tune(args: argparse.Namespace) -> int:
    from ..assistant.backends import AssistantOptions
    from ..assistant.tuning import TuneConfig, tune

    rank = given(args, TuneConfig).get("r", TuneConfig().r)
    config = configured(args, TuneConfig, lora_alpha=2 * rank)
    result = tune(configured(args, AssistantOptions), args.data, args.out, config, resume=args.resume)
    first, last = result.losses[0], sum(result.losses[-10:]) / len(result.losses[-10:])
    print(f"{result.steps} steps, loss {first:.3f} -> {last:.3f} (mean of the last 10); adapter -> {result.out}")
    return 0


def cmd_eval_chat(args: argparse.Namespace) -> int:
    from ..assistant.backends import AssistantOptions, GenerationSettings, build_assistant, describe_assistant
    from ..assistant.evaluation import evaluate_chat
    from ..assistant.tuning import read_conversations
    from ..files import write_json

    dataset = read_conversations(args.data)
    assistant = build_assistant(configured(args, AssistantOptions))
    print(f"assistant: {describe_assistant(assistant.describe())}", file=sys.stderr)
    result = evaluate_chat(assistant, dataset, configured(args, GenerationSettings), args.max_samples)
    out = args.out or Path(args.data) / "eval-chat.json"
    write_json(out, {"assistant": assistant.describe(), "data": str(args.data), **result.to_dict()})
    print(result.table())
    print(f"answers and metrics -> {out}")
    return 0


def add_parsers(commands) -> None:
    from ..assistant.backends import AssistantOptions
    from ..assistant.tuning import TuneConfig
    from ..localizer import TrainConfig

    train = commands.add_parser("train-prompts", help="learn object-agnostic prompts on an auxiliary dataset")
    train.add_argument("--data", nargs="+", required=True, help="MVTec/VisA category or dataset roots")
    train.add_argument("--categories", nargs="*", help="only these categories of a dataset root")
    train.add_argument("--split", default="test", help="split folder to train on (default test, as AnomalyCLIP)")
    train.add_argument("--out", required=True, type=Path, help="checkpoint folder")
    train.add_argument("--resume", action="store_true", help="continue from the training state in --out")
    add_options(train.add_argument_group("training"),
                [Option(TrainConfig, name) for name in ("epochs", "batch_size", "lr", "seed")])
    add_options(train.add_argument_group("backbone"), BACKBONE)
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
    add_options(synth, [Option(SynthOptions, name, parse=Path if name == "source" else None)
                        for name in ("num", "seed", "workers", "source", "preview")])
    synth.set_defaults(func=cmd_synth)

    tune = commands.add_parser("tune", help="LoRA-tune the assistant on synthesized conversations")
    tune.add_argument("--data", required=True, type=Path, help="a `synth --out` folder")
    tune.add_argument("--out", required=True, type=Path, help="adapter folder")
    tune.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    add_options(tune.add_argument_group("assistant"), [*LANGUAGE_MODEL, Option(AssistantOptions, "quantize", "--qlora")])
    add_options(tune.add_argument_group("training"), [Option(TuneConfig, name) for name in (
        "epochs", "batch_size", "lr", "max_length", "max_samples", "precision", "seed", "save_every", "loss_per")])
    add_options(tune.add_argument_group("LoRA (alpha = 2 x rank)"), [Option(TuneConfig, "r", "--rank"),
                                                                       Option(TuneConfig, "scope")])
    tune.set_defaults(func=cmd_tune)

    evaluate = commands.add_parser("eval-chat", help="score the assistant's answers on synthesized conversations")
    evaluate.add_argument("--data", required=True, type=Path, help="a held-out `synth --out` folder")
    evaluate.add_argument("--max-samples", type=int, help="evaluate only the first N conversations")
    evaluate.add_argument("--out", type=Path, help="JSON output (default DATA/eval-chat.json)")
    add_options(evaluate.add_argument_group("assistant"), LANGUAGE_MODEL + ASSISTANT[2:3] + ASSISTANT[-1:],
                max_new_tokens=64)
    evaluate.set_defaults(func=cmd_eval_chat)

