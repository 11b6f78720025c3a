"""The inspecting commands: score, chat, report, app and eval-mmad."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import counts_line, inputs, inspecting, inspector, print_failures, print_models, print_notices
from .options import ENGINE, Option, add_options, configured, input_options


def cmd_score(args: argparse.Namespace) -> int:
    from ..io import collect_samples
    from ..scoring import format_metrics, write_score_outputs

    samples = collect_samples(args.paths)
    references, product = inputs(args)
    run = inspector(args, progress=True)
    print(f"scoring {len(samples)} images", file=sys.stderr)
    batch = run.inspect_samples(samples, args.out, references, product=product)
    print_notices(run.notices)
    outputs = write_score_outputs(batch, args.out, save_maps=not args.no_maps)
    print(counts_line(batch))
    print_models(batch)
    print(f"-> {args.out}/scores.csv, results.json" + ("" if args.no_maps else ", maps/"))
    if outputs.metrics:
        print(format_metrics(outputs.metrics))
    print_failures(outputs.failures)
    return 1 if outputs.failures else 0


def print_inspection(inspection) -> None:
    from ..localizer import describe_models
    from ..vocabulary import VERDICT_MEANINGS, VERDICT_WORDS, region_row, score_text

    review = f", REVIEW from {score_text(inspection.review_threshold)}" if inspection.review_threshold is not None else ""
    print(f"verdict: {VERDICT_WORDS[inspection.verdict]}: {VERDICT_MEANINGS[inspection.verdict]} "
          f"(score {score_text(inspection.image_score)}; FAIL at {score_text(inspection.threshold)}{review}, "
          f"{inspection.threshold_source} thresholds)")
    for i, region in enumerate(inspection.regions, 1):
        row = region_row(i, region.to_dict())
        looks = f", looks: {row['looks']}" if region.attributes is not None else ""
        print(f"  region {row['number']}: {row['location']}, box [{row['box']}], {row['size']}% of the image, "
              f"peak {row['peak']}, mean {row['mean']}{looks}")
    print(f"localizer: {describe_models(inspection.models)}")


def cmd_chat(args: argparse.Namespace) -> int:
    from ..assistant.backends import describe_assistant

    run = inspector(args)
    references, product = inputs(args)
    inspection = run.inspect(args.image, references=references, product=product)
    print_notices(run.notices)
    print_inspection(inspection)
    dialogue = run.dialogue(inspection)
    print(f"assistant: {describe_assistant(run.assistant.describe())}")
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


def formats(text: str) -> tuple[str, ...]:
    from ..report import FORMATS

    chosen = tuple(f.strip().lower() for f in text.split(",") if f.strip())
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"formats are a comma list of {', '.join(FORMATS)}; got {text!r}")
    return chosen


def cmd_report(args: argparse.Namespace) -> int:
    from ..report import ReportJob, run_report_job

    run = inspector(args)
    references, product = inputs(args)
    job = ReportJob(paths=args.paths, out=args.out, formats=args.format, explain=args.explain,
                    per_image=args.per_image, details=args.details)
    result = run_report_job(run, job, references, product=product)
    batch = result.batch
    print_notices(run.notices)
    print_failures(batch.failures)
    print(counts_line(batch))
    print_models(batch, result.assistant)
    for fmt, path in result.written.items():
        print(f"{fmt}: {path}")
    return 1 if batch.failures else 0


def cmd_app(args: argparse.Namespace) -> int:
    from ..ui import AppConfig, launch

    launch(inspector(args), configured(args, AppConfig))
    return 0


def cmd_eval_mmad(args: argparse.Namespace) -> int:
    from ..assistant.backends import describe_assistant
    from ..assistant.mmad import METRICS_FILE, MMADOptions, evaluate_mmad, read_mmad
    from ..localizer import describe_models

    entries = read_mmad(args.data)
    shots = input_options(args).shots
    options = configured(args, MMADOptions, **({"shots": shots} if shots is not None else {}))
    run = inspector(args)
    references, product = inputs(args)
    result = evaluate_mmad(run, entries, args.root, args.out, options, references, product, data=args.data)
    print_notices(run.notices)
    if result.metrics.get("assistant"):
        print(f"assistant: {describe_assistant(result.metrics['assistant'])}")
    if result.metrics.get("localizer"):
        print(f"localizer: {describe_models(result.metrics['localizer'])}")
    print(f"{result.scores.counts['images']} images, {result.scores.counts['questions']} questions "
          f"({result.answered} images answered now, {result.reused} from earlier runs)")
    print(result.scores.table())
    print(f"answers and metrics -> {Path(args.out) / METRICS_FILE}")
    if result.failures:
        print(f"{len(result.failures)} images could not be read; their "
              f"{sum(f['questions'] for f in result.failures)} questions were not asked (see above)", file=sys.stderr)
        return 1
    return 0


def add_parsers(commands) -> None:
    from ..assistant.mmad import MMADOptions
    from ..io import ImageLimits
    from ..ui import AppConfig

    limits = [Option(ImageLimits, "max_pixels")]
    score = commands.add_parser("score", help="zero-shot anomaly scores, verdicts, heatmaps and metrics for images")
    score.add_argument("paths", nargs="+", help="images, folders, or MVTec/VisA category or dataset roots")
    score.add_argument("--out", required=True, type=Path, help="output folder; a re-run reuses its records")
    score.add_argument("--no-maps", action="store_true", help="skip heatmap overlays")
    inspecting(score, assistant=False)
    add_options(score.add_argument_group("engine"), ENGINE)
    score.set_defaults(func=cmd_score)

    chat = commands.add_parser("chat", help="inspect an image and talk about it")
    chat.add_argument("image", type=Path)
    chat.add_argument("--question", help="ask this and exit (default: interactive)")
    inspecting(chat)
    chat.set_defaults(func=cmd_chat)

    report = commands.add_parser("report", help="inspect images and write defect reports (html, md, json, pdf)")
    report.add_argument("paths", nargs="+", help="images, folders, or MVTec/VisA category or dataset roots")
    report.add_argument("--out", required=True, type=Path, help="output folder; an interrupted run resumes here")
    report.add_argument("--format", type=formats, default=("html", "md", "json", "pdf"),
                        help="comma list of html, md, json, pdf (default all)")
    report.add_argument("--explain", type=int, default=3,
                        help="the assistant explains the N worst FAIL, then REVIEW, images (0: no assistant; default 3)")
    report.add_argument("--per-image", choices=["none", "anomalous", "all"], default="anomalous",
                        help="also write one report per image, in images/ (default: the FAIL and REVIEW ones)")
    report.add_argument("--details", type=int, default=10, help="images shown in full in the batch report")
    add_options(report, limits)
    inspecting(report, max_new_tokens=160)
    add_options(report.add_argument_group("engine"), ENGINE)
    report.set_defaults(func=cmd_report)

    app = commands.add_parser("app", help="the Gradio inspection app")
    add_options(app.add_argument_group("app"), [Option(AppConfig, name) for name in (
        "host", "port", "concurrency", "queue_size", "max_upload_mb", "max_batch", "max_references", "share")])
    add_options(app, limits)
    inspecting(app)
    app.set_defaults(func=cmd_app)

    mmad = commands.add_parser("eval-mmad", help="answer MMAD's multiple-choice questions and score them as MMAD does",
                               description="MMAD protocol (github jam-cc/MMAD): each image is inspected with its first "
                                           "--shots N normal templates (default 1) as references, each question asked "
                                           "on its own; accuracy per question type with chance levels.")
    mmad.add_argument("--data", required=True, type=Path, help="an MMAD question file (mmad.json format)")
    mmad.add_argument("--root", required=True, type=Path, help="folder the file's image paths are relative to")
    mmad.add_argument("--out", required=True, type=Path, help="output folder (answers.jsonl, metrics.json); a "
                                                              "re-run asks only the images not answered yet")
    add_options(mmad.add_argument_group("MMAD"), [Option(MMADOptions, "templates"), Option(MMADOptions, "max_images"),
                                                   Option(MMADOptions, "phrasing", "--question-phrasing", renamed=("--question-prompts",))])
    inspecting(mmad, max_new_tokens=32)
    mmad.set_defaults(func=cmd_eval_mmad)
