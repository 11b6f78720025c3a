"""Multi-turn instruction conversations answered from ground truth, phrased from `prompts/`.

Messages use the chat format of transformers and TRL: each message has a role and a
list of content parts, `{"type": "image"}` or `{"type": "text", "text": ...}`. The first
user turn carries the image and the findings block; the answers come from the ground
truth, never from the findings, so the model learns to check proposals, not echo them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import jinja2
import numpy as np

from ..assistant.prompting import first_turn, system_prompt, text_part
from ..errors import DatasetError
from ..prompts import load_yaml
from ..types import Findings
from .ground_truth import GroundTruth

INTENTS = ("detect", "locate", "kind", "describe", "severity", "report")
_MASS_NOUNS = {"missing material", "contamination", "discoloration", "misplaced material", "foreign material"}


@dataclass
class ConversationConfig:
    turns: tuple[int, int] = field(default=(2, 4), metadata={"help": "fewest and most question turns per conversation"})
    report_rate: float = field(default=0.3, metadata={"help": "chance that the last turn asks for a defect report"})
    system_prompt: bool = field(default=True, metadata={"help": "start with the assistant's system prompt"})


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
            for text in questions + answers["anomalous"] + answers["normal"]:
                if not isinstance(text, str):
                    raise DatasetError(f"{conversations}: '{intent}' has a non-text entry {text!r}; quote it in the YAML")
            self.questions[intent] = [env.from_string(q) for q in questions]
            self.answers[intent] = {k: [env.from_string(a) for a in answers[k]] for k in ("anomalous", "normal")}


def _type_phrase(types: list[str]) -> str:
    words = [t if t in _MASS_NOUNS else f"{'an' if t[0] in 'aeiou' else 'a'} {t}" for t in types]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


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


def _variables(truth: GroundTruth, findings: Findings, object_name: str) -> dict:
    spurious = [r.location for r in findings.regions if not truth.anomalous]
    box = truth.regions[0].box_norm if truth.regions else (0, 0, 0, 0)
    locations = truth.locations
    return {
        "object": object_name,
        "types": truth.defect_types,
        "type_phrase": _type_phrase(truth.defect_types) if truth.defect_types else "",
        "locations": locations,
        "location_phrase": " and ".join(locations),
        "count": len(truth.regions),
        "percent": round(100 * truth.area_fraction, 1),
        "severity": truth.severity or "",
        "box": "[" + ", ".join(f"{v:.2f}" for v in box) + "]",
        "false_alarm_location": spurious[0] if spurious else "",
        "looks": _looks(truth, findings),
    }


class Conversation(NamedTuple):
    messages: list[dict]
    intents: list[str]
    """What each question turn asks, in order: one of INTENTS."""


def build_conversation(truth: GroundTruth, findings: Findings, object_name: str, rng: np.random.Generator,
                       book: Phrasebook, config: ConversationConfig = ConversationConfig()) -> Conversation:
    """A conversation that opens with detection and goes on with follow-up questions."""
    low, high = config.turns
    count = int(rng.integers(low, high + 1))
    follow_ups = [i for i in INTENTS[1:] if i != "report"]
    intents = ["detect"] + list(rng.choice(follow_ups, size=min(count - 1, len(follow_ups)), replace=False))
    if count > 1 and rng.random() < config.report_rate:
        intents[-1] = "report"
    variables = _variables(truth, findings, object_name)
    state = "anomalous" if truth.anomalous else "normal"
    messages = [{"role": "system", "content": [text_part(book.system)]}] if config.system_prompt else []
    for turn, intent in enumerate(intents):
        question = book.questions[intent][rng.integers(len(book.questions[intent]))].render(variables)
        answers = book.answers[intent][state]
        answer = answers[rng.integers(len(answers))].render(variables)
        user = first_turn(question, findings) if turn == 0 else {"role": "user", "content": [text_part(question)]}
        messages += [user, {"role": "assistant", "content": [text_part(answer)]}]
    return Conversation(messages, [str(i) for i in intents])
