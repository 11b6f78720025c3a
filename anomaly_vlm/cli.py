"""The `anomaly-vlm` command. Parsing only: the work lives in the library."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import AnomalyVLMError


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


def _inputs(args: argparse.Namespace) -> tuple[list | None, str | None]:
    """The references (loaded) and product name of an inspecting command."""
    from .cli_options import input_options

    inputs = input_options(args)
    if inputs.references and inputs.product:
        raise AnomalyVLMError("give --references or --product, not both (a product holds its own references)")
    return (_load_references(inputs.references, inputs.shots) if inputs.references else None), inputs.product


def _print_notices(notices: list[str]) -> None:
    for notice in notices:
        print(notice, file=sys.stderr)


def _print_failures(failures: list[dict]) -> None:
    for failure in failures:
        print(f"failed ({failure.get('kind', 'unreadable')}): {failure['error']}", file=sys.stderr)


def _counts_line(batch) -> str:
    from .verdicts import count_verdicts

    counts = count_verdicts([i.verdict for i in batch.inspections])
    kinds = [f.get("kind") for f in batch.failures]
    return (f"{len(batch.inspections)} inspected: {counts['fail']} FAIL, {counts['review']} REVIEW, "
            f"{counts['pass']} PASS; {kinds.count('unreadable')} unreadable, {kinds.count('unscored')} could not "
            f"be scored ({batch.reused} reused from earlier runs, {len(batch.scored) - batch.reused} scored now)")


def cmd_score(args: argparse.Namespace) -> int:
    from .io import collect_samples
    from .localizer import describe_models
    from .scoring import format_metrics, write_score_outputs
    from .verdicts import describe_thresholds

    samples = collect_samples(args.paths)
    references, product = _inputs(args)
    inspector = _inspector(args, progress=True)
    print(f"scoring {len(samples)} images", file=sys.stderr)
    batch = inspector.inspect_samples(samples, args.out, references, product=product)
    _print_notices(inspector.notices)
    outputs = write_score_outputs(batch, args.out, save_maps=not args.no_maps)
    print(_counts_line(batch))
    if batch.scored:
        print(f"localizer: {describe_models(batch.scored[0].record.models)}")
    print(f"thresholds: {describe_thresholds(batch.thresholds.to_dict())}")
    print(f"-> {args.out}/scores.csv, results.json" + ("" if args.no_maps else ", maps/"))
    if outputs.metrics:
        print(format_metrics(outputs.metrics))
    _print_failures(outputs.failures)
    return 1 if outputs.failures else 0


def cmd_train_prompts(args: argparse.Namespace) -> int:
    import torch

    from .io import read_dataset, usable_samples
    from .localizer import TrainConfig, build_localizer, train_prompts
    from .localizer.checkpoint import checkpoint_meta

    samples, failures = usable_samples([s for root in args.data for s in read_dataset(root, args.categories, args.split)])
    for failure in failures:
        print(f"left out: {failure['error']}", file=sys.stderr)
    if not samples:
        raise AnomalyVLMError(f"no usable training images in {', '.join(args.data)}")
    torch.manual_seed(args.seed)
    from .cli_options import given
    from .clip import BackboneConfig
    from .localizer import LocalizerConfig

    layers = given(args, LocalizerConfig).get("layers")
    localizer = build_localizer(None, "prompt", given(args, BackboneConfig), LocalizerConfig(layers=layers) if layers else None)
    meta = checkpoint_meta(localizer, BackboneConfig(**given(args, BackboneConfig)).weights,
                           f"trained on {', '.join(args.data)}")
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


def cmd_tune(args: argparse.Namespace) -> int:
    from .assistant.adapters import LoraSettings
    from .assistant.tuning import TuneConfig, tune

    config = TuneConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, max_length=args.max_length,
                        max_samples=args.max_samples, seed=args.seed, precision=args.precision,
                        save_every=args.save_every,
                        lora=LoraSettings(rank=args.rank, alpha=2 * args.rank, scope=args.scope))
    from .assistant.backends import AssistantOptions
    from .cli_options import configured

    options = configured(args, AssistantOptions, quantize=args.qlora)
    result = tune(options, args.data, args.out, config, resume=args.resume)
    first, last = result.losses[0], sum(result.losses[-10:]) / len(result.losses[-10:])
    print(f"{result.steps} steps, loss {first:.3f} -> {last:.3f} (mean of the last 10); adapter -> {result.out}")
    return 0


def cmd_eval_chat(args: argparse.Namespace) -> int:
    from .assistant.backends import GenerationSettings, build_assistant, describe_assistant
    from .assistant.evaluation import evaluate_chat
    from .assistant.tuning import read_conversations
    from .files import write_json

    from .assistant.backends import AssistantOptions
    from .cli_options import configured

    dataset = read_conversations(args.data)
    assistant = build_assistant(configured(args, AssistantOptions))
    print(f"assistant: {describe_assistant(assistant.describe())}", file=sys.stderr)
    result = evaluate_chat(assistant, dataset, configured(args, GenerationSettings), args.max_samples)
    out = args.out or Path(args.data) / "eval-chat.json"
    write_json(out, {"assistant": assistant.describe(), "data": str(args.data), **result.to_dict()})
    print(result.table())
    print(f"answers and metrics -> {out}")
    return 0


def _inspector(args: argparse.Namespace, progress: bool = False):
    """The Inspector every inspecting command shares, from the options generated from its configs."""
    from dataclasses import replace

    from .cli_options import assistant_options, generation_settings, scorer_options, verdict_config
    from .inspector import Inspector, InspectorConfig

    from .cli_options import configured
    from .engine import EngineConfig
    from .ray_engine import RayConfig

    config = InspectorConfig(scorer=scorer_options(args, progress), verdicts=verdict_config(args),
                             assistant=assistant_options(args), generation=generation_settings(args),
                             engine=configured(args, EngineConfig), ray=configured(args, RayConfig))
    if getattr(args, "max_pixels", None):
        config = replace(config, limits=replace(config.limits, max_pixels=args.max_pixels))
    return Inspector(config)


def _print_inspection(inspection) -> None:
    from .localizer import describe_models
    from .vocabulary import VERDICT_MEANINGS, VERDICT_WORDS

    review = f", REVIEW from {inspection.review_threshold:.2f}" if inspection.review_threshold is not None else ""
    print(f"verdict: {VERDICT_WORDS[inspection.verdict]}: {VERDICT_MEANINGS[inspection.verdict]} "
          f"(score {inspection.image_score:.2f}; FAIL at {inspection.threshold:.2f}{review}, "
          f"{inspection.threshold_source} thresholds)")
    for i, region in enumerate(inspection.regions, 1):
        print(f"  region {i}: {region.location}, box {list(region.box)}, {100 * region.area_fraction:.1f}% "
              f"of the image, peak {region.peak_score:.2f}")
    print(f"localizer: {describe_models(inspection.models)}")


def cmd_chat(args: argparse.Namespace) -> int:
    from .assistant.backends import describe_assistant

    inspector = _inspector(args)
    references, product = _inputs(args)
    inspection = inspector.inspect(args.image, references=references, product=product)
    _print_notices(inspector.notices)
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
    from .verdicts import describe_thresholds

    inspector = _inspector(args)
    references, product = _inputs(args)
    job = ReportJob(paths=args.paths, out=args.out, formats=args.format, explain=args.explain,
                    per_image=args.per_image, details=args.details)
    result = run_report_job(inspector, job, references, product=product)
    batch = result.batch
    _print_notices(inspector.notices)
    _print_failures(batch.failures)
    print(_counts_line(batch))
    if batch.scored:
        print(f"localizer: {describe_models(batch.scored[0].record.models)}")
    print(f"thresholds: {describe_thresholds(batch.thresholds.to_dict())}")
    if result.assistant:
        print(f"assistant: {describe_assistant(result.assistant)}")
    for fmt, path in result.written.items():
        print(f"{fmt}: {path}")
    return 1 if batch.failures else 0


def cmd_app(args: argparse.Namespace) -> int:
    from .ui import AppConfig, launch

    flags = {"host": args.host, "port": args.port, "concurrency": args.concurrency, "max_upload_mb": args.max_upload_mb}
    launch(_inspector(args), AppConfig(**{k: v for k, v in flags.items() if v is not None}))
    return 0


def cmd_product_add(args: argparse.Namespace) -> int:
    from .cli_options import scorer_options, verdict_config
    from .products import ProductStore, create_product
    from .verdicts import describe_thresholds

    notes = args.notes.read_text(encoding="utf-8").strip() if args.notes else None
    store = ProductStore()
    check = create_product(store, args.name, args.good, args.defective, notes, scorer_options(args, False),
                           verdict_config(args), args.replace)
    _print_notices(check.notices)
    _print_failures(check.failures)
    profile = check.profile
    print(f"product {profile.name}: {profile.counts['good']} good, {profile.counts['defective']} defective images "
          f"-> {profile.folder}")
    for feature, counts in check.verdicts.items():
        print(f"  {feature} features: {describe_thresholds(profile.thresholds[feature])}")
        for kind, verdicts in counts.items():
            what = "good images (held out)" if kind == "good" else "known defective images"
            print(f"    {what}: " + ", ".join(f"{v} {k.upper()}" for k, v in verdicts.items()))
    if args.learn:
        _learn(args, store)
    return 1 if check.failures else 0


def _learn(args: argparse.Namespace, store) -> None:
    from .cli_options import configured, scorer_options, verdict_config
    from .localizer.learned import LearnConfig
    from .localizer.product_prompts import ProductPromptConfig
    from .products import LEARNED_KEY, PROMPTS_KEY, learn_product_profile
    from .verdicts import describe_thresholds

    profile = learn_product_profile(store, args.name, configured(args, LearnConfig), verdict_config(args),
                                    options=scorer_options(args, False), prompt_config=configured(args, ProductPromptConfig))
    print(f"learned localizer for {profile.name}: {profile.learned['model']}, working size "
          f"{'x'.join(map(str, profile.learned['working_size']))}")
    print(f"  fused with reference scoring: {describe_thresholds(profile.thresholds[LEARNED_KEY])}")
    if profile.prompts:
        print(f"learned prompts for {profile.name}: {profile.prompts['prompts']}")
        print(f"  fused with CLIP reference scoring: {describe_thresholds(profile.thresholds[PROMPTS_KEY])}")


def cmd_product_learn(args: argparse.Namespace) -> int:
    from .products import ProductStore

    _learn(args, ProductStore())
    return 0


def cmd_product_list(args: argparse.Namespace) -> int:
    from .products import ProductStore

    store = ProductStore()
    profiles = store.list()
    if not profiles:
        print(f"no products in {store.root}; add one with `anomaly-vlm product add NAME --good DIR`")
    for profile in profiles:
        print(f"{profile.name}\t{profile.counts['good']} good\t{', '.join(profile.features)} features\t"
              f"{profile.created}")
    return 0


def cmd_product_show(args: argparse.Namespace) -> int:
    import json

    from .products import ProductStore

    print(json.dumps(ProductStore().load(args.name).to_dict(), indent=2, ensure_ascii=False))
    return 0


def cmd_product_remove(args: argparse.Namespace) -> int:
    from .products import ProductStore

    ProductStore().remove(args.name)
    print(f"removed product {args.name}")
    return 0


def cmd_eval_mmad(args: argparse.Namespace) -> int:
    from .assistant.backends import describe_assistant
    from .assistant.mmad import METRICS_FILE, MMADOptions, evaluate_mmad, read_mmad
    from .cli_options import configured, input_options
    from .localizer import describe_models

    entries = read_mmad(args.data)
    shots = input_options(args).shots
    options = configured(args, MMADOptions, **({"shots": shots} if shots is not None else {}))
    inspector = _inspector(args)
    references, product = _inputs(args)
    run = evaluate_mmad(inspector, entries, args.root, args.out, options, references, product, data=args.data)
    _print_notices(inspector.notices)
    if run.metrics.get("assistant"):
        print(f"assistant: {describe_assistant(run.metrics['assistant'])}")
    if run.metrics.get("localizer"):
        print(f"localizer: {describe_models(run.metrics['localizer'])}")
    print(f"{run.scores.counts['images']} images, {run.scores.counts['questions']} questions "
          f"({run.answered} images answered now, {run.reused} from earlier runs)")
    print(run.scores.table())
    print(f"answers and metrics -> {Path(args.out) / METRICS_FILE}")
    if run.failures:
        print(f"{len(run.failures)} images could not be read; their "
              f"{sum(f['questions'] for f in run.failures)} questions were not asked (see above)", file=sys.stderr)
        return 1
    return 0


def _inspecting(parser: argparse.ArgumentParser, max_new_tokens: int | None = None, assistant: bool = True) -> None:
    """The localizer options every inspecting command takes, and the assistant's where one answers."""
    from .cli_options import ASSISTANT, LOCALIZER, add_options

    add_options(parser.add_argument_group("localizer"), LOCALIZER)
    if assistant:
        add_options(parser.add_argument_group("assistant"), ASSISTANT,
                    **({"max_new_tokens": max_new_tokens} if max_new_tokens else {}))


def build_parser() -> argparse.ArgumentParser:
    from .cli_options import (ASSISTANT, BACKBONE, ENGINE, LANGUAGE_MODEL, LEARNING, LOCALIZER, PROMPT_SOURCE, InputOptions,
                              add_options)
    from .verdicts import VerdictConfig
    from .products import NAME_RULE

    parser = argparse.ArgumentParser(prog="anomaly-vlm", description="Industrial anomaly inspection with CLIP and LLMs.")
    commands = parser.add_subparsers(dest="command", required=True)

    score = commands.add_parser("score", help="zero-shot anomaly scores, verdicts, heatmaps and metrics for images")
    score.add_argument("paths", nargs="+", help="images, folders, or MVTec/VisA category or dataset roots")
    score.add_argument("--out", required=True, type=Path, help="output folder; a re-run reuses its records")
    score.add_argument("--no-maps", action="store_true", help="skip heatmap overlays")
    _inspecting(score, assistant=False)
    add_options(score.add_argument_group("engine"), ENGINE)
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
    add_options(tune.add_argument_group("assistant"), LANGUAGE_MODEL)
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
    evaluate.add_argument("--max-samples", type=int, help="evaluate only the first N conversations")
    evaluate.add_argument("--out", type=Path, help="JSON output (default DATA/eval-chat.json)")
    add_options(evaluate.add_argument_group("assistant"), LANGUAGE_MODEL + ASSISTANT[2:3] + ASSISTANT[-1:],
                max_new_tokens=64)
    evaluate.set_defaults(func=cmd_eval_chat)

    chat = commands.add_parser("chat", help="inspect an image and talk about it")
    chat.add_argument("image", type=Path)
    chat.add_argument("--question", help="ask this and exit (default: interactive)")
    _inspecting(chat)
    chat.set_defaults(func=cmd_chat)

    report = commands.add_parser("report", help="inspect images and write defect reports (html, md, json, pdf)")
    report.add_argument("paths", nargs="+", help="images, folders, or MVTec/VisA category or dataset roots")
    report.add_argument("--out", required=True, type=Path, help="output folder; an interrupted run resumes here")
    report.add_argument("--format", type=_formats, default=("html", "md", "json", "pdf"),
                        help="comma list of html, md, json, pdf (default all)")
    report.add_argument("--explain", type=int, default=3,
                        help="the assistant explains the N worst FAIL, then REVIEW, images (0: no assistant; default 3)")
    report.add_argument("--per-image", choices=["none", "anomalous", "all"], default="anomalous",
                        help="also write one report per image, in images/ (default: the FAIL and REVIEW ones)")
    report.add_argument("--details", type=int, default=10, help="images shown in full in the batch report")
    report.add_argument("--max-pixels", type=int, help="refuse images with more pixels than this")
    _inspecting(report, max_new_tokens=160)
    add_options(report.add_argument_group("engine"), ENGINE)
    report.set_defaults(func=cmd_report)

    app = commands.add_parser("app", help="the Gradio inspection app")
    app.add_argument("--host", help="address to listen on (default: $GRADIO_SERVER_NAME, else 127.0.0.1)")
    app.add_argument("--port", type=int, help="port (default: $GRADIO_SERVER_PORT, else 7860)")
    app.add_argument("--concurrency", type=int, default=2, help="requests worked on at once; the rest queue")
    app.add_argument("--max-upload-mb", type=int, default=25, help="largest upload accepted")
    app.add_argument("--max-pixels", type=int, help="refuse images with more pixels than this")
    _inspecting(app)
    app.set_defaults(func=cmd_app)

    mmad = commands.add_parser("eval-mmad", help="answer MMAD's multiple-choice questions and score them as MMAD does",
                               description="MMAD protocol (github jam-cc/MMAD): each image is inspected with its first "
                                           "--shots N normal templates (default 1) as references, each question asked "
                                           "on its own; accuracy per question type with chance levels.")
    mmad.add_argument("--data", required=True, type=Path, help="an MMAD question file (mmad.json format)")
    mmad.add_argument("--root", required=True, type=Path, help="folder the file's image paths are relative to")
    mmad.add_argument("--out", required=True, type=Path, help="output folder (answers.jsonl, metrics.json); a "
                                                              "re-run asks only the images not answered yet")
    from .assistant.mmad import MMADOptions
    from .cli_options import Option

    add_options(mmad.add_argument_group("MMAD"), [Option(MMADOptions, "templates"),
                                                   Option(MMADOptions, "max_images"),
                                                   Option(MMADOptions, "prompts", "--question-prompts")])
    _inspecting(mmad, max_new_tokens=32)
    mmad.set_defaults(func=cmd_eval_mmad)

    product = commands.add_parser("product", help="saved product profiles: known-good references, thresholds, notes")
    actions = product.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="save a product from its known-good images (and known defective ones)")
    add.add_argument("name", help=f"product name ({NAME_RULE})")
    add.add_argument("--good", nargs="+", required=True, help="known-good images or folders")
    add.add_argument("--defective", nargs="+", default=[], help="known-defective images or folders (checked "
                                                                    "against the calibrated thresholds)")
    add.add_argument("--notes", type=Path, help="text file: normal appearance, known defect kinds (the assistant "
                                                "reads it)")
    add.add_argument("--replace", action="store_true", help="overwrite a product of that name")
    add.add_argument("--learn", action="store_true", help="also train the product's own localizer (see `product learn`)")
    add_options(add.add_argument_group("localizer"), [o for o in LOCALIZER if o.config is not InputOptions])
    add_options(add.add_argument_group("learning"), LEARNING)
    add.set_defaults(func=cmd_product_add)
    learn = actions.add_parser("learn", help="train a saved product's own localizer on its good images, with "
                                             "simulated defects; resumes after a kill")
    learn.add_argument("name")
    add_options(learn.add_argument_group("learning"), LEARNING)
    add_options(learn.add_argument_group("CLIP (prompts are learned too where its weights load)"), PROMPT_SOURCE)
    add_options(learn.add_argument_group("verdicts"), [o for o in LOCALIZER if o.config is VerdictConfig])
    learn.set_defaults(func=cmd_product_learn)
    listing = actions.add_parser("list", help="the saved products")
    listing.set_defaults(func=cmd_product_list)
    show = actions.add_parser("show", help="one product's profile")
    show.add_argument("name")
    show.set_defaults(func=cmd_product_show)
    remove = actions.add_parser("remove", help="delete a saved product")
    remove.add_argument("name")
    remove.set_defaults(func=cmd_product_remove)
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
