"""Multi-turn instruction conversations answered from ground truth, phrased from `prompts/`.

Messages use the chat format of transformers and TRL: each message has a role and a
list of content parts, `{"type": "image"}` or `{"type": "text", "text": ...}`. The first
user turn carries the image and the findings block; the answers come from the ground
truth, never from the findings, so a model that sees the image learns to check proposals,
not echo them. A text model sees only the findings: for it (`grounding: findings`) a
conversation whose findings are wrong is asked only MMAD questions, which follow the
findings, since overruling them on evidence it cannot see teaches it to contradict a
strong localizer at random. A conversation opens by asking whether the part is defective,
or that with where and why (`explain`: the answer cites the findings' score and the
region's measured look, and is asked only where the findings agree with the truth).
Findings in the REVIEW band get an opener that says the localizer is unsure, cites the
band and names the region to look at, whatever the truth: the evidence cannot decide.

With `mmad_rate` > 0, turns are also MMAD's multiple-choice questions (github
jam-cc/MMAD), in exactly the prompt shape evaluation asks them (`anomaly_vlm.mmad_questions`,
prompts/mmad.yaml), answered with the option's letter: detection (Yes/No), defect
kind, location (3x3 grid words), appearance and, where the findings' product notes
name the product, the product. Their answers follow the findings block the model reads
(score against threshold, a REVIEW part with a region counting as flagged since MMAD forces
a choice; the strongest region's location and measured look, the notes),
not hidden ground truth: when the simulated localizer misses a defect, "No" is the
answer it supports.

With `notes_rate` > 0, findings carry product notes as a product profile's do: the
product (the recipe's, or one drawn from `products` in prompts/conversations.yaml) and
often its usual defect kinds, mostly but not always including the true one; a kind
question then often offers the notes' other kinds too, as MMAD offers a product's
plausible kinds. So the model learns to read a user's notes as evidence, not as the
answer key. Free answers name the product and the kinds by the notes' words.
Defect kind, which no findings field names, is asked only when the strongest proposed
region is a true one of a single-kind defect, so its look is the evidence. A
conversation whose findings disagree with the ground truth is all MMAD or all free, so
no two of its answers contradict each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, NamedTuple

import jinja2
import numpy as np

from ..attributes import RegionAttributes
from ..chat_format import first_turn, system_prompt, text_part
from ..configs import check_share, check_span
from ..errors import DatasetError
from ..mmad_questions import MMADQuestion, load_phrasing, phrase_question
from ..templates import load_yaml, text_list
from ..types import Findings, Region
from ..vocabulary import DEFECT_TYPES, LOCATIONS, score_text
from .ground_truth import GroundTruth
from .notes import (NOTES_RIVAL_RATE, SIZE_WORDS, SIZED_KIND_RATE, ProductNotes, listed, note_phrases, sized,
                    with_article)

INTENTS = ("detect", "explain", "locate", "kind", "describe", "severity", "report")
OPENERS = ("detect", "explain")
"""What a conversation opens with: is it defective, or that with where and why."""
MMAD_INTENTS = ("mmad_detection", "mmad_kind", "mmad_location", "mmad_appearance", "mmad_product")
"""MMAD question turns, by the question type they ask (Anomaly Detection, Defect Classification, Defect
Localization, Defect Description, Object Classification)."""


@dataclass
class ConversationConfig:
    turns: tuple[int, int] = field(default=(2, 4), metadata={"help": "fewest and most question turns per conversation"})
    report_rate: float = field(default=0.3, metadata={"help": "chance that the last turn asks for a defect report"})
    system_prompt: bool = field(default=True, metadata={"help": "start with the assistant's system prompt"})
    mmad_rate: float = field(default=0.0, metadata={
        "help": "chance that a turn is one of MMAD's multiple-choice questions, answered with a letter"})
    mmad_options: tuple[int, int] = field(default=(3, 5), metadata={
        "help": "fewest and most options of a non-Yes/No MMAD question"})
    notes_rate: float = field(default=0.0, metadata={
        "help": "chance that the findings carry product notes naming the product and often its usual defects"})
    grounding: Literal["image", "findings"] = field(default="image", metadata={
        "help": "what the trained model can check answers against. image (a VLM sees the part): free answers "
                "come from the ground truth, even where the simulated localizer is wrong. findings (a text model "
                "reads only the findings block): where the findings disagree with the truth, only MMAD questions "
                "(which follow the findings) are asked, so no answer overrules evidence the model cannot see"})

    def __post_init__(self) -> None:
        # recipe.load_recipe reports a ConfigError with the recipe file named
        check_share("conversation.mmad_rate", self.mmad_rate)
        check_share("conversation.report_rate", self.report_rate)
        check_share("conversation.notes_rate", self.notes_rate)
        check_span("conversation.mmad_options", self.mmad_options, 2)


class Phrasebook:
    """Question variants and answer templates per intent, validated and compiled once."""

    def __init__(self, conversations: str = "conversations.yaml", assistant: str = "assistant.yaml"):
        data = load_yaml(conversations)
        self.system = system_prompt(assistant)
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
        self.questions, self.answers = {}, {}
        for intent in INTENTS:
            questions = data.get("questions", {}).get(intent)
            answers = data.get("answers", {}).get(intent, {})
            if not questions or not answers.get("anomalous") or not answers.get("normal"):
                raise DatasetError(f"{conversations}: intent '{intent}' needs questions and anomalous/normal answers")
            states = ("anomalous", "normal") + (("review",) if intent in OPENERS else ())
            if intent in OPENERS and not answers.get("review"):
                raise DatasetError(f"{conversations}: intent '{intent}' opens conversations and needs review answers "
                                   "too (findings in the REVIEW band)")
            for text in questions + [a for k in states for a in answers[k]]:
                if not isinstance(text, str):
                    raise DatasetError(f"{conversations}: '{intent}' has a non-text entry {text!r}; quote it in the YAML")
            self.questions[intent] = [env.from_string(q) for q in questions]
            self.answers[intent] = {k: [env.from_string(a) for a in answers[k]] for k in states}
        self.mmad = _mmad_phrases(data.get("mmad"), conversations)
        self.mmad_phrasing = load_phrasing()
        self.products, self.notes, self.kind_names = note_phrases(data, conversations)


def _mmad_phrases(data, name: str) -> dict:
    """The `mmad` section: question variants per type, option phrasings, answer forms, distractors."""
    if not isinstance(data, dict):
        raise DatasetError(f"{name}: needs an 'mmad' section (MMAD question phrasings)")
    questions = data.get("questions") or {}
    phrases = {"questions": {kind: text_list(questions.get(kind), f"{name}: mmad.questions.{kind}")
                             for kind in ("detection", "kind", "location", "appearance", "product")}}
    pairs = data.get("yes_no")
    if not isinstance(pairs, list) or not pairs or not all(isinstance(p, list) and len(p) == 2 and
                                                           all(isinstance(t, str) for t in p) for p in pairs):
        raise DatasetError(f"{name}: mmad.yes_no must list [yes, no] option pairs")
    phrases["yes_no"] = pairs
    for key in ("location_options", "answers", "kind_distractors"):
        phrases[key] = text_list(data.get(key), f"{name}: mmad.{key}")
    for text in phrases["location_options"]:
        if "{where}" not in text:
            raise DatasetError(f"{name}: mmad.location_options: {text!r} has no {{where}}")
    for text in phrases["answers"]:
        if "{letter}" not in text:
            raise DatasetError(f"{name}: mmad.answers: {text!r} has no {{letter}}")
    return phrases


def _type_phrase(types: list[str], named: dict[str, str]) -> str:
    """The kinds with their articles, each by the notes' name for it where they give one."""
    return listed([named.get(t) or with_article(t) for t in types])


def _bare(name: str) -> str:
    """A kind's name without its article ("a chip" -> "chip"; "missing material" stays)."""
    first, _, rest = name.partition(" ")
    return rest if first in ("a", "an") and rest else name


def _looks(truth: GroundTruth, findings: Findings) -> str:
    """What the largest true region looks like, as measured on its pixels ("" when it was not proposed or measured).

    The measure comes with the simulated proposal of that region (the one overlapping
    its box most), so an answer names only evidence the findings block also shows.
    """
    if not truth.regions:
        return ""
    tx0, ty0, tx1, ty1 = truth.regions[0].box

    def overlap(box: tuple[int, int, int, int]) -> int:
        x0, y0, x1, y1 = box
        return max(0, min(x1, tx1) - max(x0, tx0)) * max(0, min(y1, ty1) - max(y0, ty0))

    measured = [(overlap(r.box), r.attributes) for r in findings.regions if r.attributes is not None]
    best = max(measured, key=lambda pair: pair[0], default=(0, None))
    return best[1].describe() if best[0] > 0 else ""


def _variables(truth: GroundTruth, findings: Findings, object_name: str, notes: ProductNotes | None = None) -> dict:
    """Template variables; with notes, the product and the kinds go by the notes' words, as their writer would say them."""
    spurious = [r.location for r in findings.regions if not truth.anomalous]
    strongest = findings.regions[0] if findings.regions else None
    box = truth.regions[0].box_norm if truth.regions else (0, 0, 0, 0)
    locations = truth.locations
    named = notes.kinds if notes else {}
    return {
        "object": _bare(notes.product) if notes else object_name,
        "types": truth.defect_types,
        "type_phrase": _type_phrase(truth.defect_types, named) if truth.defect_types else "",
        "locations": locations,
        "location_phrase": " and ".join(locations),
        "count": len(truth.regions),
        "percent": round(100 * truth.area_fraction, 1),
        "severity": truth.severity or "",
        "box": "[" + ", ".join(f"{v:.2f}" for v in box) + "]",
        "false_alarm_location": spurious[0] if spurious else "",
        "looks": _looks(truth, findings),
        "score": score_text(findings.image_score),
        "threshold": score_text(findings.threshold),
        "review_threshold": score_text(findings.review_threshold) if findings.review_threshold is not None else "",
        "region_location": strongest.location if strongest else "",
        "region_looks": strongest.looks() if strongest else "",
    }


# ---------------------------------------------------------------- MMAD turns

def plain_look(attributes: RegionAttributes) -> str:
    """What a region looks like in MMAD's plain option words ("a thin elongated dark line")."""
    tone = {"darker": "dark", "brighter": "bright"}.get(attributes.contrast)
    if tone is None:
        tone = "discoloured" if attributes.hue == "none" else attributes.hue
        tone = f"faint {tone}"
    if attributes.shape == "elongated":
        return f"a thin elongated {tone} line"
    if attributes.shape == "compact":
        size = "small" if attributes.size in ("tiny", "small") else "large"
        return f"a {size} round {tone} spot"
    return f"an irregular {tone} patch"


def _look_variants(attributes: RegionAttributes) -> list[RegionAttributes]:
    """Plausible other looks: another shape, tone or colour than the measured one."""

    variants = []
    for contrast in ("darker", "brighter", "similar"):
        for shape in ("elongated", "compact", "irregular"):
            for hue in dict.fromkeys((attributes.hue, "none", "reddish", "yellowish")):
                variants.append(replace(attributes, contrast=contrast, shape=shape, hue=hue,
                                        orientation=(attributes.orientation or "diagonal") if shape == "elongated"
                                        else None))
    return variants


def _choose(correct: str, distractors: list[str], count: int, rng: np.random.Generator,
            rivals: list[str] = ()) -> tuple[dict[str, str], str]:
    """Lettered options (A, B, ...): `correct` among up to count - 1 distinct distractors, shuffled; its letter.

    `rivals` are offered first (up to count - 1 of them), the rest drawn from `distractors`.
    """
    first = [r for r in dict.fromkeys(rivals) if r != correct][: count - 1]
    pool = [d for d in dict.fromkeys(distractors) if d != correct and d not in first]
    size = min(count - 1 - len(first), len(pool))
    picked = first + ([pool[i] for i in rng.choice(len(pool), size=size, replace=False)] if size > 0 else [])
    choices = [correct] + picked
    order = rng.permutation(len(choices))
    choices = [choices[i] for i in order]
    letter = chr(65 + choices.index(correct))
    return {chr(65 + i): text for i, text in enumerate(choices)}, letter


def _overlaps(region: Region, truth: GroundTruth) -> bool:
    x0, y0, x1, y1 = region.box
    return any(min(x1, b[2]) > max(x0, b[0]) and min(y1, b[3]) > max(y0, b[1]) for b in (r.box for r in truth.regions))


def flagged(findings: Findings) -> bool:
    """What MMAD's Yes/No detection answer follows: a FAIL, or a REVIEW part with a region to look at.

    MMAD forces a choice: a part sent to a person with a region shown is flagged (the free answer says unsure)."""
    return findings.anomalous or (findings.verdict == "review" and bool(findings.regions))


def mmad_available(truth: GroundTruth, findings: Findings, notes: ProductNotes | None = None) -> list[str]:
    """The MMAD question types whose answer the findings block supports for this sample.

    `notes` are the product notes the findings carry, when they carry some.
    """
    kinds = ["mmad_detection"]
    strongest = findings.regions[0] if findings.regions else None
    if flagged(findings) and strongest is not None:
        kinds.append("mmad_location")
        if strongest.attributes is not None:
            kinds.append("mmad_appearance")
        if len(truth.defect_types) == 1 and _overlaps(strongest, truth) and strongest.attributes is not None:
            kinds.append("mmad_kind")
    if notes is not None:
        kinds.append("mmad_product")
    return kinds


def mmad_question(kind: str, truth: GroundTruth, findings: Findings, object_name: str, rng: np.random.Generator,
                  book: Phrasebook, config: ConversationConfig, notes: ProductNotes | None = None) -> MMADQuestion:
    """One MMAD question of type `kind` (one of MMAD_INTENTS) with its answer, as the findings support it.

    A kind the notes name is offered under the name they use, so a user's words for a
    defect are the words the model learns to match.
    """
    phrases = book.mmad
    texts = phrases["questions"][kind.removeprefix("mmad_")]
    text = texts[rng.integers(len(texts))].replace("{object}", object_name)
    count = int(rng.integers(config.mmad_options[0], config.mmad_options[1] + 1))
    strongest = findings.regions[0] if findings.regions else None
    if kind == "mmad_detection":
        yes, no = phrases["yes_no"][rng.integers(len(phrases["yes_no"]))]
        options, letter = _choose(yes if flagged(findings) else no, [no if flagged(findings) else yes], 2, rng)
        return MMADQuestion(text, options, letter, "Anomaly Detection")
    if kind == "mmad_location":
        form = phrases["location_options"][rng.integers(len(phrases["location_options"]))]
        proposed = {r.location for r in findings.regions}
        wrong = [form.format(where=w) for w in LOCATIONS if w not in proposed]
        options, letter = _choose(form.format(where=strongest.location), wrong, count, rng)
        return MMADQuestion(text, options, letter, "Defect Localization")
    if kind == "mmad_appearance":
        measured = rng.random() < 0.4
        render = (lambda a: a.describe(short=True)) if measured else plain_look
        wrong = [render(a) for a in _look_variants(strongest.attributes)]
        options, letter = _choose(render(strongest.attributes), wrong, count, rng)
        return MMADQuestion(text, options, letter, "Defect Description")
    if kind == "mmad_kind":
        named = notes.kinds if notes else {}
        article = rng.random() < 0.7
        size = SIZE_WORDS.get(strongest.attributes.size) if rng.random() < SIZED_KIND_RATE else None

        def phrase(name: str, measured: bool = False) -> str:
            word = size if measured else (str(rng.choice(sorted(set(SIZE_WORDS.values())))) if size else None)
            name = sized(name, word) if word else name
            return name if article else _bare(name)

        true = set(truth.defect_types)
        wrong = [phrase(named.get(t) or with_article(t)) for t in DEFECT_TYPES if t not in true]
        wrong += [phrase(d) for d in phrases["kind_distractors"]]
        rivals = [phrase(name) for kind, name in named.items() if kind not in true and rng.random() < NOTES_RIVAL_RATE]
        first = truth.defect_types[0]
        options, letter = _choose(phrase(named.get(first) or with_article(first), measured=True), wrong, count, rng,
                                  rivals)
        return MMADQuestion(text, options, letter, "Defect Classification")
    if kind == "mmad_product":
        if notes is None:
            raise ValueError("a product question needs findings whose notes name the product")
        options, letter = _choose(notes.product, [one for one, _ in book.products], count, rng)
        return MMADQuestion(text, options, letter, "Object Classification")
    raise ValueError(f"unknown MMAD question type {kind!r}; choose one of {', '.join(MMAD_INTENTS)}")


def mmad_answer(question: MMADQuestion, rng: np.random.Generator, book: Phrasebook) -> str:
    forms = book.mmad["answers"]
    return forms[rng.integers(len(forms))].format(letter=question.answer, text=question.options[question.answer])


def _plan(intents: list[str], truth: GroundTruth, findings: Findings, notes: ProductNotes | None,
          rng: np.random.Generator, config: ConversationConfig) -> list[str]:
    """Which free turns become MMAD questions (each type once at most)."""
    available = mmad_available(truth, findings, notes)
    if findings.verdict == "review" and config.grounding == "findings":
        # the opener says the localizer is unsure; a free follow-up would decide what the model cannot see
        chosen = [str(k) for k in rng.permutation(available)]
        if rng.random() < config.mmad_rate:
            return chosen[: len(intents)]
        return intents[:1] + chosen[: len(intents) - 1]
    if findings.anomalous != truth.anomalous:  # free answers (ground truth) and MMAD's (findings) would contradict
        if config.grounding == "image" and rng.random() >= config.mmad_rate:
            return intents
        chosen = rng.permutation(available).tolist()
        return [str(k) for k in chosen[: len(intents)]]
    plan = []
    for intent in intents:
        left = [k for k in available if k not in plan]
        if left and rng.random() < config.mmad_rate:
            plan.append(str(left[rng.integers(len(left))]))
        else:
            plan.append(intent)
    return plan


class Conversation(NamedTuple):
    messages: list[dict]
    intents: list[str]
    """What each question turn asks, in order: one of INTENTS or MMAD_INTENTS."""


def build_conversation(truth: GroundTruth, findings: Findings, object_name: str, rng: np.random.Generator,
                       book: Phrasebook, config: ConversationConfig = ConversationConfig(),
                       notes: ProductNotes | None = None) -> Conversation:
    """A conversation that opens with detection and goes on with follow-up questions, some of them MMAD's.

    `notes`: the product notes the findings carry (`draw_notes`); product questions need them.
    """
    low, high = config.turns
    count = int(rng.integers(low, high + 1))
    agree = findings.anomalous == truth.anomalous
    unsure = findings.verdict == "review"
    # An explanation cites the findings' score as the reason for the truth's verdict: only where the two agree.
    # In the REVIEW band it cites the band and says a person should look, whatever the truth.
    openers = OPENERS if agree or unsure else ("detect",)
    follow_ups = [i for i in INTENTS if i not in OPENERS and i != "report"]
    intents = [str(rng.choice(openers))] + list(rng.choice(follow_ups, size=min(count - 1, len(follow_ups)),
                                                           replace=False))
    if count > 1 and rng.random() < config.report_rate:
        intents[-1] = "report"
    if config.mmad_rate > 0 or (config.grounding == "findings" and (unsure or not agree)):
        intents = _plan(intents, truth, findings, notes, rng, config)
    variables = _variables(truth, findings, object_name, notes)
    state = "anomalous" if truth.anomalous else "normal"
    messages = [{"role": "system", "content": [text_part(book.system)]}] if config.system_prompt else []
    for turn, intent in enumerate(intents):
        if intent in MMAD_INTENTS:
            asked = mmad_question(intent, truth, findings, object_name, rng, book, config, notes)
            shots = int(rng.choice([0, 1, 1, 1, 2, 4]))
            question, answer = phrase_question(asked, book.mmad_phrasing, shots), mmad_answer(asked, rng, book)
        else:
            question = book.questions[intent][rng.integers(len(book.questions[intent]))].render(variables)
            answers = book.answers[intent]["review" if unsure and intent in OPENERS else state]
            answer = answers[rng.integers(len(answers))].render(variables)
        user = first_turn(question, findings) if turn == 0 else {"role": "user", "content": [text_part(question)]}
        messages += [user, {"role": "assistant", "content": [text_part(answer)]}]
    return Conversation(messages, [str(i) for i in intents])
