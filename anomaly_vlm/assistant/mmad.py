"""MMAD's protocol (github jam-cc/MMAD): multiple-choice questions about real images, scored per type.

MMAD's file maps each query image path to its questions and to normal "template"
images of the same product. Here each image is inspected through the `Inspector` with
its first N templates as references, so the assistant reads the same findings any
other command would give, and each question is asked on its own, as MMAD's scripts
ask them. Answers are read as MMAD reads them (the letter, else the option the answer
names) and scored as its summary does: accuracy per question type, balanced accuracy
for Anomaly Detection, the mean over types. Every figure has its chance level beside
it, because with two to five options a model that answers at random already scores
20-50%, and a small model that always says "A" scores its share of A answers.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from ..errors import AnomalyVLMError, DatasetError
from ..prompts import load_yaml

MMAD_TYPES = ("Anomaly Detection", "Defect Classification", "Defect Localization", "Defect Description",
              "Defect Analysis", "Object Classification", "Object Analysis")
"""The seven question types, in MMAD's order."""

TYPE_ALIASES = {"Object Structure": "Object Analysis", "Object Details": "Object Analysis"}
"""Older MMAD files split Object Analysis in two; its summary merges them back."""

DETECTION = "Anomaly Detection"
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
    prompts: str = field(default="mmad.yaml", metadata={"help": "question phrasing (a file in prompts/ or a path)"})


@dataclass(frozen=True)
class MMADQuestion:
    text: str
    options: dict[str, str]
    answer: str
    type: str

    @property
    def chance(self) -> float:
        return 1.0 / len(self.options)


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


# ---------------------------------------------------------------- answers

_LABELLED = re.compile(r"\b(?i:answer)\s*(?:is|:)?\s*:?\s*\(?([A-Z])\b(?![a-z'])")
_BRACKETED = re.compile(r"\(([A-Z])\)")
_LEADING = re.compile(r"^\W*([A-Z])\s*(?:[.):,]|$)")
_STANDALONE = re.compile(r"\b(A\b(?!\s+[a-z])|[B-Z]\b)")  # "A crack" is an article, not option A


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def parse_letter(answer: str, options: dict[str, str]) -> str | None:
    """The option an answer chooses, read as MMAD reads it; None when it names none.

    First the letter itself ("B", "(B)", "Answer: C", "D. a crack"; of bare letters the
    last, as MMAD takes the last), else the option whose text the answer contains
    (the longest, then the first said), else a near-verbatim echo of one option.
    MMAD's own fallback (difflib with cutoff 0) gives every non-empty answer some
    letter, which credits a model chance accuracy for saying nothing; here an answer
    that names no option gets none and counts as wrong.
    """
    text = answer.strip()
    for pattern in (_LABELLED, _BRACKETED, _LEADING):
        found = [m.upper() for m in pattern.findall(text) if m.upper() in options]
        if found:
            return found[0]
    bare = [m for m in _STANDALONE.findall(text) if m in options]
    if bare:
        return bare[-1]
    said = f" {_normal(text)} "
    named = [(len(_normal(v)), -said.find(f" {_normal(v)} "), k) for k, v in options.items()
             if _normal(v) and f" {_normal(v)} " in said]
    if named:
        return max(named)[2]
    close = difflib.get_close_matches(_normal(text), [_normal(v) for v in options.values()], n=1, cutoff=0.8)
    return next((k for k, v in options.items() if close and _normal(v) == close[0]), None)


def phrase_question(question: MMADQuestion, prompts: dict, shots: int) -> str:
    """The question as the assistant reads it: MMAD's instruction, what the findings compare with, the options."""
    options = "\n".join(prompts["option"].format(letter=k, text=v) for k, v in question.options.items())
    context = prompts["templates"].format(count=shots) if shots else prompts["no_templates"]
    return "\n".join([prompts["instruction"].strip(), context.strip(),
                      prompts["question"].format(question=question.text, options=options)])


def load_prompts(name: str = "mmad.yaml") -> dict:
    prompts = load_yaml(name)
    missing = [k for k in ("instruction", "templates", "no_templates", "question", "option")
               if not isinstance(prompts.get(k), str)]
    if missing:
        raise DatasetError(f"{name}: needs the phrasings {', '.join(missing)}")
    return prompts


# ---------------------------------------------------------------- scoring

@dataclass
class MMADScores:
    """MMAD's figures with their chance levels; rates are fractions in [0, 1], None where nothing was asked."""

    per_type: dict[str, float]
    chance: dict[str, float]
    average: float | None
    detection_balanced_accuracy: float | None
    detection_accuracy: float | None
    false_alarm_rate: float | None
    miss_rate: float | None
    counts: dict[str, Any]
    per_dataset: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        """Per type: accuracy, chance and questions; Anomaly Detection balanced, as MMAD reports it."""
        def cell(value: float | None) -> str:
            return "-" if value is None else f"{100 * value:.1f}"

        rows = [f"{'question type':<30} {'accuracy %':>10} {'chance %':>9} {'n':>6}"]
        for kind, value in self.per_type.items():
            name = f"{kind} (balanced)" if kind == DETECTION else kind
            rows.append(f"{name:<30} {cell(value):>10} {cell(self.chance[kind]):>9} "
                        f"{self.counts['per_type'][kind]:>6}")
        rows.append(f"{'average over types':<30} {cell(self.average):>10} {cell(self.chance.get('average')):>9} "
                    f"{self.counts['questions']:>6}")
        for name, key, n in (("false-alarm rate", "false_alarm_rate", "normal"), ("miss rate", "miss_rate", "anomalous")):
            rows.append(f"{name:<30} {cell(getattr(self, key)):>10} {cell(self.chance.get(key)):>9} "
                        f"{self.counts[n]:>6}")
        if self.counts.get("unparsed"):
            rows.append(f"({self.counts['unparsed']} answers named no option and count as wrong)")
        return "\n".join(rows)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _is_anomalous(row: dict) -> bool:
    if row.get("anomalous") is not None:
        return bool(row["anomalous"])
    return "good" not in row["image"].split("/")  # MMAD's own rule: normal images sit in "good" folders


def _order(kinds: set[str]) -> list[str]:
    return [k for k in MMAD_TYPES if k in kinds] + sorted(kinds - set(MMAD_TYPES))


def score_answers(rows: list[dict], by_dataset: bool = True) -> MMADScores:
    """MMAD's summary of answer rows (`type`, `correct`, `options`, `image`, `anomalous`, `letter`)."""
    hits, chance = defaultdict(list), defaultdict(list)
    detection: dict[bool, list[tuple[bool, float]]] = {True: [], False: []}
    for row in rows:
        kind = TYPE_ALIASES.get(row["type"], row["type"])
        hits[kind].append(bool(row["correct"]))
        chance[kind].append(1.0 / len(row["options"]))
        if kind == DETECTION:
            detection[_is_anomalous(row)].append((bool(row["correct"]), 1.0 / len(row["options"])))
    per_type = {kind: _mean([float(h) for h in hits[kind]]) for kind in _order(set(hits))}
    chance_of = {kind: _mean(chance[kind]) for kind in per_type}
    normal_acc = _mean([float(h) for h, _ in detection[False]])
    anomalous_acc = _mean([float(h) for h, _ in detection[True]])
    balanced = _mean([a for a in (normal_acc, anomalous_acc) if a is not None])
    plain = per_type.get(DETECTION)
    if DETECTION in per_type:
        per_type[DETECTION] = balanced
        chance_of[DETECTION] = _mean([c for c in (_mean([c for _, c in detection[False]]),
                                                  _mean([c for _, c in detection[True]])) if c is not None])
    false_alarm = None if normal_acc is None else 1 - normal_acc
    miss = None if anomalous_acc is None else 1 - anomalous_acc
    if per_type:
        chance_of["average"] = _mean(list(chance_of.values()))
    if detection[False]:
        chance_of["false_alarm_rate"] = 1 - _mean([c for _, c in detection[False]])
    if detection[True]:
        chance_of["miss_rate"] = 1 - _mean([c for _, c in detection[True]])
    counts = {"questions": len(rows), "images": len({r["image"] for r in rows}),
              "per_type": {kind: len(hits[kind]) for kind in per_type},
              "normal": len(detection[False]), "anomalous": len(detection[True]),
              "unparsed": sum(r.get("letter") is None for r in rows)}
    scores = MMADScores(per_type, chance_of, _mean(list(per_type.values())), balanced, plain, false_alarm, miss,
                        counts)
    datasets = sorted({r["image"].split("/")[0] for r in rows})
    if by_dataset and len(datasets) > 1:  # MMAD's headline average is over datasets; pooled figures above
        scores.per_dataset = {name: {k: v for k, v in score_answers(
            [r for r in rows if r["image"].split("/")[0] == name], by_dataset=False).to_dict().items()
            if k != "per_dataset"} for name in datasets}
    return scores


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
    prompts = load_prompts(options.prompts)
    entries = spread(entries, options.max_images)
    shots = max(0, options.shots)
    fixed = references is not None or product is not None
    if shots and not fixed:
        lacking = next((e for e in entries if not e.templates(options.templates)), None)
        if lacking is not None:
            raise DatasetError(f"MMAD entry {lacking.image!r}: field '{options.templates}_templates' is missing or "
                               f"empty, and --shots {shots} asks for templates (--shots 0 for none)")
    config = inspector.config
    settings = _jsonable({"data": str(Path(data).resolve()) if data else None, "root": str(root.resolve()),
                          "shots": shots, "templates": options.templates, "product": product,
                          "references": None if references is None else len(references),
                          "prompts": hashlib.sha256(json.dumps(prompts, sort_keys=True).encode()).hexdigest()[:16],
                          "assistant": asdict(config.assistant), "generation": asdict(config.generation),
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
            raw = "".join(dialogue.ask(phrase_question(question, prompts, count))).strip()
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
