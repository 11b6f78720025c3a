"""MMAD's summary of answers: accuracy per question type, balanced for Anomaly Detection, with chance levels.

Every figure has its chance level beside it, because with two to five options a model
that answers at random already scores 20-50%, and a small model that always says "A"
scores its share of A answers.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from ..mmad_questions import DETECTION, MMAD_TYPES, TYPE_ALIASES


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
