"""The user's first question, answered in free text on real images: right, consistent, explained?

MMAD's multiple-choice protocol scores letters; a quality engineer types "Is anything
wrong, where, and why?" and reads the sentence. This inspects a labelled MVTec-layout
category (evenly spread over its test folders) with a product or references, asks that
question about each image, and measures each answer:

- verdict: the defective/normal the answer states, against the label (balanced
  accuracy; chance 0.5) and against the localizer's PASS/FAIL (agreement); on REVIEW
  parts, the share of answers that state neither (the localizer is unsure: so should be
  the answer);
- contradictions: answers the dialogue checks flag (a strong region called normal, a place
  where no region is) and answers that loop;
- why: answers that cite the findings' image score or the strongest region's look, and
  answers that quote a number the findings block does not hold;
- where (with masks): defective answers that name a 3x3 cell the defect covers.

    python benchmarks/free_answers.py --data ../shared/data/kolektorsdd/kolektorsdd --product kolektor \
        --features builtin --max-images 30 --json /tmp/free.json [--adapter none]

The product must exist (`anomaly-vlm product add`); ANOMALY_VLM_HOME picks the store.
"""

from __future__ import annotations

import argparse
import json
import re
import time

import numpy as np

from anomaly_vlm.assistant.backends import AssistantOptions, GenerationSettings, describe_assistant
from anomaly_vlm.assistant.dialogue import named_locations, repeats_itself, says_anomalous
from anomaly_vlm.assistant.mmad import spread
from anomaly_vlm.inspector import Inspector, InspectorConfig, attach_image
from anomaly_vlm.io import collect_samples, load_image, load_mask, read_category
from anomaly_vlm.localizer import ScorerOptions
from anomaly_vlm.proposals import grid_location
from anomaly_vlm.vocabulary import score_text

QUESTION = "Is anything wrong, where, and why?"


def covered_cells(mask: np.ndarray) -> set[str]:
    """The 3x3 grid cells (location words, as regions are named) holding any defect pixel."""
    height, width = mask.shape
    rows, columns = np.nonzero(mask)
    return {grid_location(c, r, width, height) for r, c in zip(rows, columns)}


def cites_evidence(answer: str, inspection) -> bool:
    """The answer gives a reason from the findings: the image score, or a word of the strongest region's look."""
    if score_text(inspection.image_score) in answer:
        return True
    strongest = max(inspection.regions, key=lambda r: r.peak_score, default=None)
    if strongest is None or strongest.attributes is None:
        return False
    words = {w for w in strongest.looks().replace(",", " ").split() if len(w) > 4}
    return any(w in answer.lower() for w in words)


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def invented_numbers(answer: str, inspection) -> list[str]:
    """Numbers the answer quotes that the findings block does not hold (a score misread or made up)."""
    shown = set(_NUMBER.findall(inspection.findings.block()))
    return [n for n in _NUMBER.findall(answer) if n not in shown]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="an MVTec-layout category root (its test/ split is asked about)")
    parser.add_argument("--product", help="a saved product profile")
    parser.add_argument("--references", nargs="+", help="known-good images instead of a product")
    parser.add_argument("--features", default="auto", choices=["auto", "builtin", "clip"])
    parser.add_argument("--adapter", help="LoRA adapter folder; 'none' for the bare model (default: the shipped one)")
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--max-images", type=int, default=30)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--json", help="write the figures and every answer here")
    args = parser.parse_args()

    samples = spread(read_category(args.data, "test"), args.max_images)
    inspector = Inspector(InspectorConfig(scorer=ScorerOptions(features=args.features, progress=False),
                                          assistant=AssistantOptions(adapter=args.adapter, device="cpu"),
                                          generation=GenerationSettings(max_new_tokens=args.max_new_tokens)))
    references = None
    if args.references:
        references = [load_image(s.path) for s in collect_samples(args.references)]
    start = time.perf_counter()
    run = inspector.inspect_samples(samples, references=references, product=args.product, progress=True)
    scored = time.perf_counter() - start
    rows = []
    for sample, inspection in zip(run.scored, run.inspections):
        attach_image(inspection, load_image(sample.sample.path))  # the regions' measured looks, as `chat` shows them
        answer, flags = inspector.explain(inspection, args.question)
        label, stated = sample.sample.label, says_anomalous(answer)
        row = {"image": str(sample.sample.path), "label": label, "verdict": inspection.verdict,
               "score": round(inspection.image_score, 4), "answer": answer, "stated": stated, "flags": flags,
               "loops": repeats_itself(answer), "cites_evidence": cites_evidence(answer, inspection),
               "invented_numbers": invented_numbers(answer, inspection)}
        if label and sample.sample.mask_path:
            height, width = inspection.image_size[1], inspection.image_size[0]
            cells = covered_cells(load_mask(sample.sample.mask_path, (width, height)))
            named = named_locations(answer)
            row["location_hit"] = bool(set(named) & cells)
        rows.append(row)
    answered = time.perf_counter() - start - scored

    def share(values) -> float | None:
        values = list(values)
        return round(float(np.mean(values)), 3) if values else None

    defective, normal = [r for r in rows if r["label"]], [r for r in rows if not r["label"]]
    decided = [r for r in rows if r["verdict"] != "review"]
    figures = {
        "images": len(rows), "defective": len(defective), "normal": len(normal),
        "balanced_accuracy": round((share(r["stated"] is True for r in defective) +
                                    share(r["stated"] is False for r in normal)) / 2, 3) if defective and normal else None,
        "chance": 0.5,
        "agrees_with_localizer": share((r["stated"] is True) == (r["verdict"] == "fail") for r in decided),
        "review_parts": sum(r["verdict"] == "review" for r in rows),
        "unsure_on_review": share(r["stated"] is None for r in rows if r["verdict"] == "review"),
        "no_verdict": share(r["stated"] is None for r in rows),
        "flagged": share(bool(r["flags"]) for r in rows),
        "loops": share(r["loops"] for r in rows),
        "cites_evidence": share(r["cites_evidence"] for r in rows),
        "invents_numbers": share(bool(r["invented_numbers"]) for r in rows),
        "location_hit": share(r["location_hit"] for r in defective if "location_hit" in r),
        "question": args.question,
        "assistant": describe_assistant(inspector.assistant.describe()),
        "seconds": {"scoring": round(scored, 1), "answering": round(answered, 1)},
    }
    for key, value in figures.items():
        print(f"{key:24s} {value}")
    for row in rows[:: max(1, len(rows) // 4)]:
        print(f"- {row['image'].split('/test/')[-1]} [{row['verdict']}]: {row['answer']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"figures": figures, "answers": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
