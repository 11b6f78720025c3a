"""Chat evaluation on held-out synthesized conversations.

Each question is asked with the reference conversation so far as history, so one
wrong early answer does not spoil the later turns' scores. Answers are read for the
verdict, the grid words and the defect types they state, and checked against the
findings as the dialogue layer checks them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from ..types import Findings
from ..vocabulary import DEFECT_TYPES
from .backends import Assistant, GenerationSettings
from .dialogue import contradictions, named_locations, says_anomalous
from .tuning import clean_messages

_TYPES = re.compile(r"\b(" + "|".join(sorted(DEFECT_TYPES, key=len, reverse=True)) + r")", re.IGNORECASE)

METRICS = ("detection_accuracy", "location_accuracy", "type_accuracy", "false_alarm_rate", "contradiction_rate")


@dataclass
class _Tally:
    hits: int = 0
    total: int = 0

    def add(self, hit: bool) -> None:
        self.hits += int(hit)
        self.total += 1

    @property
    def rate(self) -> float | None:
        return self.hits / self.total if self.total else None


@dataclass
class ChatEvaluation:
    metrics: dict[str, float | None]
    counts: dict[str, int]
    answers: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"metrics": self.metrics, "counts": self.counts, "answers": self.answers}

    def table(self) -> str:
        rows = [f"{'metric':<20} {'value':>7} {'n':>5}"]
        for name in METRICS:
            value = self.metrics[name]
            rows.append(f"{name:<20} {'-' if value is None else f'{value:.3f}':>7} {self.counts[name]:>5}")
        return "\n".join(rows)


def evaluate_chat(assistant: Assistant, dataset, settings: GenerationSettings = GenerationSettings(max_new_tokens=64),
                  max_samples: int | None = None, progress: bool = True) -> ChatEvaluation:
    tallies = {name: _Tally() for name in METRICS}
    answers = []
    rows = dataset.select(range(min(max_samples, len(dataset)))) if max_samples else dataset
    for row in tqdm(rows, desc="evaluating", unit="conversation", disable=not progress):
        messages, findings = clean_messages(row["messages"]), Findings.from_dict(row["findings"])
        anomalous, locations, types = bool(row["label"]), set(row["locations"]), set(row["defect_types"])
        images = row["images"] if assistant.images else []
        questions = [i for i, m in enumerate(messages) if m["role"] == "user"]
        for position, intent in zip(questions, row["intents"]):
            answer = "".join(assistant.stream(messages[: position + 1], images, settings)).strip()
            flags = contradictions(answer, findings)
            tallies["contradiction_rate"].add(bool(flags))
            if intent in ("detect", "explain"):  # an explanation opens with the verdict too
                verdict = says_anomalous(answer)
                tallies["detection_accuracy"].add(verdict is anomalous)
                if not anomalous:
                    tallies["false_alarm_rate"].add(verdict is True)
            elif intent == "locate" and anomalous:
                named = named_locations(answer)
                tallies["location_accuracy"].add(bool(named) and named[0] in locations)
            elif intent == "kind" and anomalous:
                named = {m.group(1).lower() for m in _TYPES.finditer(answer)}
                tallies["type_accuracy"].add(bool(named & types))
            answers.append({"id": row["id"], "intent": intent, "question": messages[position]["content"][-1]["text"],
                            "answer": answer, "reference": messages[position + 1]["content"][0]["text"],
                            "flags": flags})
    return ChatEvaluation({k: t.rate for k, t in tallies.items()}, {k: t.total for k, t in tallies.items()}, answers)
