"""A conversation about one inspected image: history, streaming, and checks against the findings.

The checks catch the ways an assistant misleads an inspector: calling a part good
while the localizer holds a strong region or sent it to REVIEW, pointing at a place
where no region is, quoting another number as the image's score, and looping on one
phrase (a small model out of its depth).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from PIL import Image

from ..chat_format import first_turn, system_prompt, text_part
from ..types import Findings, Inspection
from ..vocabulary import LOCATIONS, score_text
from .backends import Assistant, GenerationSettings
from .prompting import zoom_crops

STRONG_PEAK = 0.7
"""A region at least this strong makes "no anomaly" a contradiction."""

_NEGATIVE = re.compile(
    r"\b(no (visible )?(anomal\w*|defects?|damage)|not defective|(is|looks|appears) (normal|intact|fine|ok)|"
    r"passes|passed|no issues?|nothing (wrong|unusual))\b", re.IGNORECASE)
_POSITIVE = re.compile(r"\b(yes|defective|does not pass|anomaly is|there is an? (anomaly|defect)|damaged|reject)\b",
                       re.IGNORECASE)
_IMAGE_SCORE = re.compile(r"\b(?:image scores?|(?:its|the|a) score)\s+(?:of\s+|is\s+)?(\d+(?:\.\d+)?)\b",
                          re.IGNORECASE)
"""A number stated as the image's score ("the image scores 0.99", "its score 0.24", "a score of 1.00")."""
_LOCATION = re.compile(r"\b(" + "|".join(sorted(LOCATIONS, key=len, reverse=True)) + r")\b", re.IGNORECASE)


def says_anomalous(answer: str) -> bool | None:
    """The verdict an answer states: True (defective), False (normal), or None (no verdict)."""
    negative, positive = _NEGATIVE.search(answer), _POSITIVE.search(answer)
    if negative and (not positive or negative.start() < positive.start()):
        return False
    return True if positive else None


def named_locations(answer: str) -> list[str]:
    """Grid words named in an answer, longest match first ("top left" is not also "top")."""
    return list(dict.fromkeys(m.group(1).lower() for m in _LOCATION.finditer(answer)))


def _rounds_to(value: float, text: str) -> bool:
    """Whether `text` is `value` rounded to the decimals `text` shows (0.9973 may read "1.00")."""
    decimals = len(text.partition(".")[2])
    return abs(float(text) - value) <= 0.5 * 10.0**-decimals + 1e-9


def contradictions(answer: str, findings: Findings, strong: float = STRONG_PEAK) -> list[str]:
    """Why `answer` disagrees with `findings`, in words; empty when it does not."""
    flags = []
    strongest = max(findings.regions, key=lambda r: r.peak_score, default=None)
    if says_anomalous(answer) is False and findings.anomalous and strongest and strongest.peak_score >= strong:
        flags.append(f"says no anomaly, but the localizer scores the image {findings.image_score:.2f} "
                     f"(threshold {findings.threshold:.2f}) with a region at the {strongest.location} "
                     f"(peak {strongest.peak_score:.2f})")
    elif says_anomalous(answer) is False and findings.verdict == "review":
        flags.append(f"calls the part normal, but its score {score_text(findings.image_score)} is in the REVIEW band "
                     f"({score_text(findings.review_threshold)} to {score_text(findings.threshold)}): "
                     "the localizer is unsure, and a person should look")
    quoted = [text for text in _IMAGE_SCORE.findall(answer) if not _rounds_to(findings.image_score, text)]
    if quoted:
        flags.append(f"quotes the image score as {', '.join(dict.fromkeys(quoted))}, but it is "
                     f"{score_text(findings.image_score)}")
    known = {r.location for r in findings.regions}
    unknown = [word for word in named_locations(answer) if word not in known]
    if unknown:
        where = f"regions only at the {', '.join(sorted(known))}" if known else "no region"
        flags.append(f"names the {', '.join(unknown)}, where the localizer has {where}")
    return flags


def repeats_itself(answer: str, times: int = 3) -> bool:
    """True when one clause (text between punctuation) comes back `times` times or more, or a phrase of 2 to 6
    words runs `times + 1` times in a row ("a type of a type of a type of a type of"): small models loop both ways."""
    clauses = [c.strip().lower() for c in re.split(r"[.,;:!?\n]+", answer)]
    counts: dict[str, int] = {}
    for clause in clauses:
        if len(clause.split()) >= 3:
            counts[clause] = counts.get(clause, 0) + 1
    if any(n >= times for n in counts.values()):
        return True
    words = re.findall(r"[\w%]+", answer.lower())
    runs = times + 1
    return any(all(words[start + k * n: start + (k + 1) * n] == words[start: start + n] for k in range(1, runs))
               for n in range(2, 7) for start in range(len(words) - n * runs + 1))


def answer_flags(answer: str, findings: Findings) -> list[str]:
    """Everything a reader should double-check in `answer`, in words."""
    flags = contradictions(answer, findings)
    if repeats_itself(answer):
        flags.append("repeats itself; treat it as unreliable")
    return flags


@dataclass
class Turn:
    question: str
    answer: str
    flags: list[str] = field(default_factory=list)


class Dialogue:
    """Questions about one image, each answered with the whole conversation as context."""

    def __init__(self, assistant: Assistant, inspection: Inspection, image: Image.Image | None = None,
                 settings: GenerationSettings = GenerationSettings(), crops: int = 2, history: list[Turn] = ()):
        self.assistant, self.inspection, self.settings = assistant, inspection, settings
        self.images: list[Image.Image] = []
        image = image if image is not None else inspection.image
        if assistant.images:
            if image is None:
                raise ValueError("this assistant reads images: give the inspected image")
            self.images = [image] + zoom_crops(image, inspection.regions, crops)
        self.messages: list[dict] = [{"role": "system", "content": [text_part(system_prompt())]}]
        self.turns: list[Turn] = []
        for turn in history:
            self.messages += [self._user(turn.question), {"role": "assistant", "content": [text_part(turn.answer)]}]
            self.turns.append(turn)

    def _user(self, question: str) -> dict:
        if len(self.messages) > 1:
            return {"role": "user", "content": [text_part(question)]}
        return first_turn(question, self.inspection.findings, len(self.images))

    def ask(self, question: str) -> Iterator[str]:
        """Stream the answer; when it ends, the turn (with its flags) is in `turns`."""
        if not question.strip():
            raise ValueError("empty question")
        user = self._user(question)
        pieces = []
        for piece in self.assistant.stream(self.messages + [user], self.images, self.settings):
            pieces.append(piece)
            yield piece
        answer = "".join(pieces).strip()
        self.messages += [user, {"role": "assistant", "content": [text_part(answer)]}]
        self.turns.append(Turn(question, answer, answer_flags(answer, self.inspection.findings)))
