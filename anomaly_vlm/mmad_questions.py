"""MMAD's multiple-choice question format (github jam-cc/MMAD): question types, phrasing, reading the letter.

Evaluation (`anomaly_vlm.assistant.mmad`) and the synthesized training conversations
(`anomaly_vlm.synth.conversations`) both put questions through `phrase_question`, so a
model is tuned on exactly the prompt shape it is evaluated with (prompts/mmad.yaml).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from .errors import DatasetError
from .templates import load_yaml

MMAD_TYPES = ("Anomaly Detection", "Defect Classification", "Defect Localization", "Defect Description",
              "Defect Analysis", "Object Classification", "Object Analysis")
"""The seven question types, in MMAD's order."""

TYPE_ALIASES = {"Object Structure": "Object Analysis", "Object Details": "Object Analysis"}
"""Older MMAD files split Object Analysis in two; its summary merges them back."""

DETECTION = "Anomaly Detection"


@dataclass(frozen=True)
class MMADQuestion:
    text: str
    options: dict[str, str]
    answer: str
    type: str

    @property
    def chance(self) -> float:
        return 1.0 / len(self.options)


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


def phrase_question(question: MMADQuestion, phrasing: dict, shots: int) -> str:
    """The question as the assistant reads it: MMAD's instruction, what the findings compare with, the options."""
    options = "\n".join(phrasing["option"].format(letter=k, text=v) for k, v in question.options.items())
    context = phrasing["templates"].format(count=shots) if shots else phrasing["no_templates"]
    return "\n".join([phrasing["instruction"].strip(), context.strip(),
                      phrasing["question"].format(question=question.text, options=options)])


def load_phrasing(name: str = "mmad.yaml") -> dict:
    phrasing = load_yaml(name)
    missing = [k for k in ("instruction", "templates", "no_templates", "question", "option")
               if not isinstance(phrasing.get(k), str)]
    if missing:
        raise DatasetError(f"{name}: needs the phrasings {', '.join(missing)}")
    return phrasing
