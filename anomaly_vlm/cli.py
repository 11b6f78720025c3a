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
    from .localizer import DEFAULT_WEIGHTS, FusionConfig, ScorerOptions, build_scorer, describe_models
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
    print(f"scoring {len(samples)} images, mode {models['mode']}: {describe_models(models)}", file=sys.stderr)
    config = replace(ScoreConfig(), threshold=args.threshold, save_maps=not args.no_maps)
    run = score_samples(built.scorer, samples, args.out, config)
    print(f"scored {len(run.results)} images -> {args.out}/scores.csv, results.json" + (", maps/" if config.save_maps else ""))
    if run.metrics:
        print(format_metrics(run.metrics))
    for failure in run.failures:
        print(f"failed: {failure['error']}", file=sys.stderr)
    return 1 if run.failures else 0


def cmd_train_prompts(args: argparse.Namespace) -> int:
    import torch

    from .io import read_dataset, usable_samples
    from .localizer import PromptCheckpoint, TrainConfig, build_localizer, train_prompts

    samples, failures = usable_samples([s for root in args.data for s in read_dataset(root, args.categories, args.split)])
    for failure in failures:
        print(f"left out: {failure['error']}", file=sys.stderr)
    if not samples:
        raise AnomalyVLMError(f"no usable training images in {', '.join(args.data)}")
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
    return 1 if failures else 0


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


def _assistant_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("assistant")
    group.add_argument("--backend", choices=["text", "vlm"], default="text",
                       help="text: a causal LM reading the findings; vlm: an image-text-to-text model")
    group.add_argument("--model", help="hub id, local folder or .gguf (default: the embedded SmolLM2-135M-Instruct)")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    group.add_argument("--assistant-precision", choices=["auto", "fp32", "bf16"], default="auto",
                       help="weights for answering (auto: bf16 on CUDA and on CPUs with native bf16)")


def _assistant_options(args: argparse.Namespace, **changes):
    from .assistant.backends import AssistantOptions

    return AssistantOptions(backend=args.backend, model=args.model, adapter=getattr(args, "adapter", None),
                            device=args.device, precision=args.assistant_precision, **changes)


def cmd_tune(args: argparse.Namespace) -> int:
    from .assistant.adapters import LoraSettings
    from .assistant.tuning import TuneConfig, tune

    config = TuneConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, max_length=args.max_length,
                        max_samples=args.max_samples, seed=args.seed, precision=args.precision,
                        save_every=args.save_every,
                        lora=LoraSettings(rank=args.rank, alpha=2 * args.rank, scope=args.scope))
    result = tune(_assistant_options(args, quantize=args.qlora), args.data, args.out, config, resume=args.resume)
    first, last = result.losses[0], sum(result.losses[-10:]) / len(result.losses[-10:])
    print(f"{result.steps} steps, loss {first:.3f} -> {last:.3f} (mean of the last 10); adapter -> {result.out}")
    return 0


def cmd_eval_chat(args: argparse.Namespace) -> int:
    from .assistant.backends import GenerationSettings, build_assistant, describe_assistant
    from .assistant.evaluation import evaluate_chat
    from .assistant.tuning import read_conversations
    from .files import write_json

    dataset = read_conversations(args.data)
    assistant = build_assistant(_assistant_options(args))
    print(f"assistant: {describe_assistant(assistant.describe())}", file=sys.stderr)
    result = evaluate_chat(assistant, dataset, GenerationSettings(max_new_tokens=args.max_new_tokens), args.max_samples)
    out = args.out or Path(args.data) / "eval-chat.json"
    write_json(out, {"assistant": assistant.describe(), "data": str(args.data), **result.to_dict()})
    print(result.table())
    print(f"answers and metrics -> {out}")
    return 0


def _inspector(args: argparse.Namespace):
    """The Inspector the chat, report and app commands share, from their common options."""
    from dataclasses import replace

    from .assistant.backends import GenerationSettings
    from .inspector import Inspector, InspectorConfig
    from .localizer import ScorerOptions

    config = InspectorConfig(scorer=ScorerOptions(prompts=args.prompts, features=args.features, progress=False),
                             threshold=args.threshold, assistant=_assistant_options(args),
                             generation=GenerationSettings(max_new_tokens=args.max_new_tokens))
    if getattr(args, "max_pixels", None):
        config = replace(config, limits=replace(config.limits, max_pixels=args.max_pixels))
    return Inspector(config)


def _print_inspection(inspection) -> None:
    from .localizer import describe_models

    print(f"verdict: {'ANOMALOUS' if inspection.label else 'normal'} "
          f"(score {inspection.image_score:.2f}, threshold {inspection.threshold:.2f})")
    for i, region in enumerate(inspection.regions, 1):
        print(f"  region {i}: {region.location}, box {list(region.box)}, {100 * region.area_fraction:.1f}% "
              f"of the image, peak {region.peak_score:.2f}")
    print(f"localizer: {describe_models(inspection.models)}")


def cmd_chat(args: argparse.Namespace) -> int:
    from .assistant.backends import describe_assistant

    inspector = _inspector(args)
    references = _load_references(args.references, args.shots) if args.references else None
    inspection = inspector.inspect(args.image, references=references)
    for notice in inspector.notices:
        print(notice, file=sys.stderr)
    _print_inspection(inspection)
    dialogue = inspector.dialogue(inspection)
    print(f"assistant: {describe_assistant(inspector.assistant.describe())}")
    questions = [args.question] if args.question else None
    while True:
        question = questions.pop(0) if questions is not None else input("\nyou> ").strip()
        if question.lower() in ("", "quit", "exit") and questions is None:
            return 0
        print("assistant> ", end="", flush=True)
        for piece in dialogue.ask(question):
            print(piece, end="", flush=True)
        print()
        for flag in dialogue.turns[-1].flags:
            print(f"  ! check: the answer {flag}")
        if questions is not None and not questions:
            return 0


def _formats(text: str) -> tuple[str, ...]:
    from .report import FORMATS

    chosen = tuple(f.strip().lower() for f in text.split(",") if f.strip())
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"formats are a comma list of {', '.join(FORMATS)}; got {text!r}")
    return chosen


def cmd_report(args: argparse.Namespace) -> int:
    from .assistant.backends import describe_assistant
    from .localizer import describe_models
    from .report import ReportJob, run_report_job

    inspector = _inspector(args)
    references = _load_references(args.references, args.shots) if args.references else None
    job = ReportJob(paths=args.paths, out=args.out, formats=args.format, explain=args.explain,
                    per_image=args.per_image, details=args.details)
    result = run_report_job(inspector, job, references)
    for notice in inspector.notices:
        print(notice, file=sys.stderr)
    for failure in result.failures:
        print(f"failed: {failure['error']}", file=sys.stderr)
    anomalous = sum(i.label for i in result.inspections)
    print(f"inspected {len(result.inspections)} images ({anomalous} anomalous, {len(result.failures)} unreadable) "
          f"with {describe_models(result.inspections[0].models) if result.inspections else 'no localizer'}")
    if result.assistant:
        print(f"assistant: {describe_assistant(result.assistant)}")
    for fmt, path in result.written.items():
        print(f"{fmt}: {path}")
    return 1 if result.failures else 0


def cmd_app(args: argparse.Namespace) -> int:
    from .ui import AppConfig, launch

    launch(_inspector(args), AppConfig(host=args.host, port=args.port, concurrency=args.concurrency,
                                       max_upload_mb=args.max_upload_mb, share=False))
    return 0


def _inspection_args(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    parser.add_argument("--adapter", help="LoRA adapter folder written by `tune`")
    parser.add_argument("--prompts", help="prompt checkpoint folder for the CLIP localizer")
    parser.add_argument("--features", choices=["auto", "builtin", "clip"], default="auto")
    parser.add_argument("--threshold", type=float, default=0.5, help="image score and region threshold")
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    _assistant_args(parser)


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
    tune = commands.add_parser("tune", help="LoRA-tune the assistant on synthesized conversations")
    tune.add_argument("--data", required=True, type=Path, help="a `synth --out` folder")
    tune.add_argument("--out", required=True, type=Path, help="adapter folder")
    _assistant_args(tune)
    tune.add_argument("--epochs", type=int, default=1)
    tune.add_argument("--batch-size", type=int, default=4)
    tune.add_argument("--lr", type=float, default=2e-4)
    tune.add_argument("--rank", type=int, default=16, help="LoRA rank (alpha = 2 x rank)")
    tune.add_argument("--scope", choices=["language", "all"], default="language",
                      help="language: adapt the language model only (vision tower and projector frozen)")
    tune.add_argument("--max-length", type=int, default=768, help="tokens per conversation")
    tune.add_argument("--max-samples", type=int, help="use only the first N conversations")
    tune.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    tune.add_argument("--qlora", action="store_true", help="4-bit base model through bitsandbytes (CUDA only)")
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--save-every", type=int, default=50, help="steps between resumable checkpoints")
    tune.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    tune.set_defaults(func=cmd_tune)

    evaluate = commands.add_parser("eval-chat", help="score the assistant's answers on synthesized conversations")
    evaluate.add_argument("--data", required=True, type=Path, help="a held-out `synth --out` folder")
    evaluate.add_argument("--adapter", help="LoRA adapter folder written by `tune`")
    evaluate.add_argument("--max-samples", type=int, help="evaluate only the first N conversations")
    evaluate.add_argument("--max-new-tokens", type=int, default=64)
    evaluate.add_argument("--out", type=Path, help="JSON output (default DATA/eval-chat.json)")
    _assistant_args(evaluate)
    evaluate.set_defaults(func=cmd_eval_chat)

    chat = commands.add_parser("chat", help="inspect an image and talk about it")
    chat.add_argument("image", type=Path)
    chat.add_argument("--question", help="ask this and exit (default: interactive)")
    chat.add_argument("--references", nargs="+", help="known-good images or folders (reference scoring)")
    chat.add_argument("--shots", type=int, help="use only the first N references")
    _inspection_args(chat, 256)
    chat.set_defaults(func=cmd_chat)

    report = commands.add_parser("report", help="inspect images and write defect reports (html, md, json, pdf)")
    report.add_argument("paths", nargs="+", help="images, folders, or MVTec/VisA category or dataset roots")
    report.add_argument("--out", required=True, type=Path, help="output folder; an interrupted run resumes here")
    report.add_argument("--format", type=_formats, default=("html", "md", "json", "pdf"),
                        help="comma list of html, md, json, pdf (default all)")
    report.add_argument("--references", nargs="+", help="known-good images or folders (reference scoring)")
    report.add_argument("--shots", type=int, help="use only the first N references")
    report.add_argument("--explain", type=int, default=3,
                        help="the assistant explains the N worst failing images (0: no assistant; default 3)")
    report.add_argument("--per-image", choices=["none", "anomalous", "all"], default="anomalous",
                        help="also write one report per image, in images/ (default: the anomalous ones)")
    report.add_argument("--details", type=int, default=10, help="images shown in full in the batch report")
    report.add_argument("--max-pixels", type=int, help="refuse images with more pixels than this")
    _inspection_args(report, 160)
    report.set_defaults(func=cmd_report)

    app = commands.add_parser("app", help="the Gradio inspection app")
    app.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for the network)")
    app.add_argument("--port", type=int, default=7860)
    app.add_argument("--concurrency", type=int, default=2, help="requests worked on at once; the rest queue")
    app.add_argument("--max-upload-mb", type=int, default=25, help="largest upload accepted")
    app.add_argument("--max-pixels", type=int, help="refuse images with more pixels than this")
    _inspection_args(app, 256)
    app.set_defaults(func=cmd_app)
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
