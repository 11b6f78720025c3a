"""MMAD's protocol (github jam-cc/MMAD): its file of multiple-choice questions about real images, answered.

MMAD's file maps each query image path to its questions and to normal "template"
images of the same product. Here each image is inspected through the `Inspector` with
its first N templates as references, so the assistant reads the same findings any
other command would give, and each question is asked on its own, as MMAD's scripts
ask them. Answers are read as MMAD reads them (`anomaly_vlm.mmad_questions`) and
scored as its summary does (`mmad_scores`); answers.jsonl lets a killed run resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from ..errors import AnomalyVLMError, DatasetError
from ..mmad_questions import DETECTION, TYPE_ALIASES, MMADQuestion, load_phrasing, parse_letter, phrase_question
from .backends import adapter_identity, resolve_adapter
from .mmad_scores import MMADScores, score_answers

ANSWERS_FILE, METRICS_FILE, RUN_FILE = "answers.jsonl", "metrics.json", "run.json"


@dataclass
class MMADOptions:
    """How an MMAD file is evaluated (the localizer and assistant options are the Inspector's)."""

    shots: int = field(default=1, metadata={"help": "normal templates per image given to the localizer as "
                                                     "references (MMAD's 1-shot by default; 0: none)"})
    templates: Literal["similar", "random"] = field(default="similar", metadata={
        "help": "which template list of each entry to draw from: MMAD's similar_templates or random_templates"})
    max_images: int | None = field(default=None, metadata={
        "help": "answer only N images, spread evenly over the file so every folder is sampled"})
    phrasing: str = field(default="mmad.yaml", metadata={"help": "how questions are put (a file in prompts/ or a path)"})


@dataclass
class MMADEntry:
    image: str
    questions: list[MMADQuestion]
    mask_path: str | None = None
    similar_templates: list[str] | None = None
    random_templates: list[str] | None = None

    @property
    def dataset(self) -> str:
        """The first path component, as MMAD's summary groups its rows (MVTec-AD, VisA, ...)."""
        return self.image.split("/")[0]

    @property
    def anomalous(self) -> bool | None:
        """From the Anomaly Detection question's correct option ("Yes" = defective); None without one."""
        for question in self.questions:
            if question.type == DETECTION:
                return _yes_no(question.options[question.answer])
        return None

    def templates(self, which: str) -> list[str] | None:
        return self.similar_templates if which == "similar" else self.random_templates


def _yes_no(text: str) -> bool | None:
    word = re.match(r"\W*(\w+)", text.lower())
    return {"yes": True, "no": False}.get(word.group(1) if word else "")


def _field(entry: str, name: str, value: Any, kind: type, what: str) -> Any:
    if not isinstance(value, kind):
        raise DatasetError(f"MMAD entry {entry!r}: field {name!r} must be {what}, got {type(value).__name__}")
    return value


def _paths(entry: str, name: str, value: Any) -> list[str] | None:
    if value is None:
        return None
    value = _field(entry, name, value, list, "a list of image paths")
    if not all(isinstance(p, str) and p for p in value):
        raise DatasetError(f"MMAD entry {entry!r}: field {name!r} must list image paths (strings)")
    return value


def _question(entry: str, i: int, item: Any) -> MMADQuestion:
    where = f"conversation[{i}]"
    item = _field(entry, where, item, dict, "a mapping with Question, Options, Answer and type")
    for key in ("Question", "Options", "Answer", "type"):
        if key not in item:
            raise DatasetError(f"MMAD entry {entry!r}: field {where}.{key} is missing")
    text = _field(entry, f"{where}.Question", item["Question"], str, "a string")
    options = _field(entry, f"{where}.Options", item["Options"], dict, "a mapping of letters to option texts")
    if len(options) < 2 or not all(isinstance(k, str) and re.fullmatch(r"[A-Z]", k) and isinstance(v, str)
                                   for k, v in options.items()):
        raise DatasetError(f"MMAD entry {entry!r}: field {where}.Options must map two or more capital letters "
                           f"to option texts, got {options!r}")
    answer = _field(entry, f"{where}.Answer", item["Answer"], str, "a letter")
    if answer not in options:
        raise DatasetError(f"MMAD entry {entry!r}: field {where}.Answer is {answer!r}, not one of the options "
                           f"{', '.join(options)}")
    kind = _field(entry, f"{where}.type", item["type"], str, "a question type name")
    return MMADQuestion(text, dict(options), answer, TYPE_ALIASES.get(kind, kind))


def parse_entry(image: str, value: Any) -> MMADEntry:
    """One entry of an MMAD file; a malformed one raises DatasetError naming the entry and the field."""
    value = _field(image, "(entry)", value, dict, "a mapping with a 'conversation' list")
    keys = [k for k in value if k.startswith("conversation")]  # MMAD's scripts read the first such key
    if not keys:
        raise DatasetError(f"MMAD entry {image!r}: field 'conversation' is missing")
    conversation = _field(image, keys[0], value[keys[0]], list, "a list of questions")
    questions = [_question(image, i, item) for i, item in enumerate(conversation)]
    mask = value.get("mask_path")
    if mask is not None and not isinstance(mask, str):
        raise DatasetError(f"MMAD entry {image!r}: field 'mask_path' must be a path string")
    return MMADEntry(image, questions, mask or None, _paths(image, "similar_templates", value.get("similar_templates")),
                     _paths(image, "random_templates", value.get("random_templates")))


def read_mmad(path: str | Path) -> list[MMADEntry]:
    """The entries of an MMAD file (`{image_path: {"conversation": [...], "similar_templates": [...], ...}}`)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the MMAD file ({exc})") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: an MMAD file maps image paths to entries; got a {type(data).__name__}")
    return [parse_entry(image, value) for image, value in data.items()]


def mask_file(root: str | Path, entry: MMADEntry) -> Path | None:
    """The entry's mask: MMAD's `mask_path` is relative to the first three components of the image path."""
    if not entry.mask_path:
        return None
    return Path(root, *entry.image.split("/")[:3], entry.mask_path).resolve()


# ---------------------------------------------------------------- answer log

class AnswerLog:
    """answers.jsonl: one row per question, each image's rows appended in one write.

    A killed run leaves at most a torn last line, which is cut off on open, so every
    image in the file is either whole or absent and a re-run asks only what is missing.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: dict[tuple[str, int], dict] = {}
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        data = self.path.read_bytes()
        good = data.rfind(b"\n") + 1
        if good < len(data):
            with open(self.path, "r+b") as handle:  # cut a torn last line: that image is asked again
                handle.truncate(good)
        for number, line in enumerate(data[:good].decode("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                self.rows[(row["image"], int(row["index"]))] = row
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise DatasetError(f"{self.path}:{number}: not an answer row; move the file away to start over") \
                    from None

    def done(self, entry: MMADEntry) -> bool:
        return all((entry.image, i) in self.rows for i in range(len(entry.questions)))

    def of(self, entry: MMADEntry) -> list[dict]:
        return [self.rows[(entry.image, i)] for i in range(len(entry.questions))]

    def append(self, rows: list[dict]) -> None:
        block = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, block)
            os.fsync(fd)
        finally:
            os.close(fd)
        for row in rows:
            self.rows[(row["image"], row["index"])] = row


# ---------------------------------------------------------------- evaluation

@dataclass
class MMADRun:
    scores: MMADScores
    failures: list[dict]
    answered: int
    reused: int
    metrics: dict


def spread(entries: list[MMADEntry], count: int | None) -> list[MMADEntry]:
    """`count` entries evenly spaced over the file (MMAD files run folder by folder: the first N are one folder)."""
    if count is None or count >= len(entries):
        return entries
    return [entries[i * len(entries) // count] for i in range(max(0, count))]


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _differences(before: Any, now: Any, where: str = "") -> list[str]:
    """Settings whose values differ; a field only one side has (an option added since) is no difference."""
    if isinstance(before, dict) and isinstance(now, dict):
        return [d for k in sorted(set(before) & set(now)) for d in _differences(before[k], now[k], f"{where}{k}.")]
    return [] if before == now else [where.rstrip(".")]


def _check_settings(out: Path, settings: dict, resuming: bool) -> None:
    """Refuse to mix answers of two setups in one --out (a changed model would be silently averaged in)."""
    path = out / RUN_FILE
    if resuming and path.exists():
        changed = _differences(json.loads(path.read_text(encoding="utf-8")), settings)
        if changed:
            raise AnomalyVLMError(f"{out} holds answers from another setup ({', '.join(changed)} differ); "
                                  f"give a new --out, or remove {out / ANSWERS_FILE} to start over")
    from ..files import write_json

    write_json(path, settings)


def evaluate_mmad(inspector, entries: list[MMADEntry], root: str | Path, out: str | Path,
                  options: MMADOptions = MMADOptions(), references: list | None = None, product: str | None = None,
                  data: str | Path | None = None, progress: bool = True) -> MMADRun:
    """Answer every question of `entries` (resuming from `out`), then score all answers as MMAD does.

    `references` or `product` replace the entries' templates with one fixed comparison
    for every image. An image or template that cannot be read fails only its own
    questions: it is listed in `failures` and asked again on the next run.
    """
    from ..files import write_json
    from ..io import load_image

    root, out = Path(root), Path(out)
    phrasing = load_phrasing(options.phrasing)
    entries = spread(entries, options.max_images)
    shots = max(0, options.shots)
    fixed = references is not None or product is not None
    if shots and not fixed:
        lacking = next((e for e in entries if not e.templates(options.templates)), None)
        if lacking is not None:
            raise DatasetError(f"MMAD entry {lacking.image!r}: field '{options.templates}_templates' is missing or "
                               f"empty, and --shots {shots} asks for templates (--shots 0 for none)")
    config = inspector.config
    adapter = resolve_adapter(config.assistant)  # its version too: a retrained default adapter is another setup
    settings = _jsonable({"data": str(Path(data).resolve()) if data else None, "root": str(root.resolve()),
                          "shots": shots, "templates": options.templates, "product": product,
                          "references": None if references is None else len(references),
                          "phrasing": hashlib.sha256(json.dumps(phrasing, sort_keys=True).encode()).hexdigest()[:16],
                          "assistant": asdict(config.assistant),
                          "adapter": adapter_identity(adapter) if adapter else None,
                          "generation": asdict(config.generation),
                          "scorer": {k: v for k, v in asdict(config.scorer).items() if k != "progress"},
                          "verdicts": asdict(config.verdicts), "proposals": asdict(config.proposals)})
    log = AnswerLog(out / ANSWERS_FILE)
    _check_settings(out, settings, resuming=bool(log.rows))
    failures, answered, reused, models = [], 0, 0, None
    for entry in tqdm(entries, desc="MMAD", unit="image", disable=not progress):
        if log.done(entry):
            reused += 1
            continue
        try:
            if fixed:
                refs = references
            else:
                refs = [load_image(root / p, config.limits) for p in (entry.templates(options.templates) or [])[:shots]]
            inspection = inspector.inspect(root / entry.image, references=refs or None, image_id=entry.image,
                                           product=product)
        except AnomalyVLMError as exc:
            failure = {"image": entry.image, "error": str(exc), "questions": len(entry.questions)}
            failures.append(failure)
            print(f"failed ({len(entry.questions)} questions not asked): {entry.image}: {exc}", file=sys.stderr)
            continue
        models = inspection.models
        count = len(refs) if refs else (shots if product else 0)
        rows = []
        for index, question in enumerate(entry.questions):
            dialogue = inspector.dialogue(inspection)
            raw = "".join(dialogue.ask(phrase_question(question, phrasing, count))).strip()
            letter = parse_letter(raw, question.options)
            rows.append({"image": entry.image, "index": index, "type": question.type, "question": question.text,
                         "options": question.options, "raw_answer": raw, "letter": letter,
                         "correct_answer": question.answer, "correct": letter == question.answer,
                         "anomalous": entry.anomalous, "image_score": inspection.image_score,
                         "verdict": inspection.verdict})
        log.append(rows)
        answered += 1
    rows = [row for entry in entries if log.done(entry) for row in log.of(entry)]
    if models is None and (out / METRICS_FILE).exists():  # all reused: the localizer of the earlier run
        models = json.loads((out / METRICS_FILE).read_text(encoding="utf-8")).get("localizer")
    scores = score_answers(rows)
    failed_questions = sum(f["questions"] for f in failures)
    metrics = {**scores.to_dict(), "failures": failures,
               "assistant": inspector.assistant.describe() if answered or rows else None,
               "localizer": models, "settings": settings, "notices": list(inspector.notices)}
    metrics["counts"].update({"failed_images": len(failures), "failed_questions": failed_questions,
                              "answered_now": answered, "reused": reused})
    write_json(out / METRICS_FILE, metrics)
    return MMADRun(scores, failures, answered, reused, metrics)
