"""Synthesized samples as training sets: a Hugging Face dataset, LLaVA JSON, and a preview sheet.

The dataset follows the chat format of transformers and TRL (`images` + `messages`),
so a vision-language SFT trainer takes it without a conversion step; the LLaVA export
serves the original LLaVA training code and its descendants.
"""

from __future__ import annotations

import functools
import math
import tempfile
from pathlib import Path

import cv2
import numpy as np

from ..files import write_json, write_png

DATASET = "dataset"
LLAVA = "llava.json"
PREVIEW = "preview.png"


def _features():
    from datasets import Features, Image, List, Value

    region = {"box": List(Value("int32"), length=4), "box_norm": List(Value("float32"), length=4),
              "area_fraction": Value("float32"), "location": Value("string"),
              "peak_score": Value("float32"), "mean_score": Value("float32")}
    return Features({
        "id": Value("string"),
        "category": Value("string"),
        "object": Value("string"),
        "label": Value("int8"),
        "images": List(Image()),
        "mask": Image(),
        "messages": List({"role": Value("string"),
                          "content": List({"type": Value("string"), "text": Value("string")})}),
        "intents": List(Value("string")),
        "findings": {"image_score": Value("float32"), "threshold": Value("float32"), "regions": List(region)},
        "regions": List(region),
        "defect_types": List(Value("string")),
        "severity": Value("string"),
        "locations": List(Value("string")),
        "area_fraction": Value("float32"),
    })


@functools.lru_cache(maxsize=8)
def _empty_mask(width: int, height: int) -> bytes:
    return cv2.imencode(".png", np.zeros((height, width), np.uint8))[1].tobytes()


def _text_parts(content: list[dict]) -> list[dict]:
    """Every part with both keys, as Arrow needs one struct type for all parts."""
    return [{"type": part["type"], "text": part.get("text")} for part in content]


def _rows(out: Path, records: list[dict]):
    for record in records:
        truth = record["ground_truth"]
        mask = (out / record["mask"]).read_bytes() if record["mask"] else _empty_mask(*record["size"])
        yield {
            "id": record["id"],
            "category": record["category"],
            "object": record["object"],
            "label": record["label"],
            "images": [{"bytes": (out / record["image"]).read_bytes(), "path": record["image"]}],
            "mask": {"bytes": mask, "path": record["mask"]},
            "messages": [{"role": m["role"], "content": _text_parts(m["content"])} for m in record["messages"]],
            "intents": record["intents"],
            "findings": record["findings"],
            "regions": truth["regions"],
            "defect_types": record["defect_types"],
            "severity": truth["severity"],
            "locations": list(dict.fromkeys(r["location"] for r in truth["regions"])),
            "area_fraction": truth["area_fraction"],
        }


def save_dataset(out: Path, records: list[dict]) -> Path:
    """Write `out/dataset` (for `datasets.load_from_disk`), replacing an older one only once complete."""
    from datasets import Dataset

    target = out / DATASET
    with tempfile.TemporaryDirectory(dir=out, prefix=".dataset-") as work:
        work = Path(work)
        # Arrow's build cache goes beside the output, not into the user's global cache.
        dataset = Dataset.from_generator(_rows, features=_features(), cache_dir=str(work / "cache"),
                                         gen_kwargs={"out": out, "records": records})
        dataset.save_to_disk(str(work / "saved"))
        del dataset
        old = work / "old"
        if target.exists():
            target.rename(old)
        (work / "saved").rename(target)
    return target


def _llava_turns(messages: list[dict]) -> list[dict]:
    """LLaVA's human/gpt turns; its own conversation template supplies the system prompt."""
    turns = []
    for message in messages:
        if message["role"] == "system":
            continue
        text = "\n".join(p["text"] for p in message["content"] if p["type"] == "text")
        if any(p["type"] == "image" for p in message["content"]):
            text = "<image>\n" + text
        turns.append({"from": "human" if message["role"] == "user" else "gpt", "value": text})
    return turns


def save_llava(out: Path, records: list[dict]) -> Path:
    """`out/llava.json`: image paths relative to `out`, as LLaVA's `--image_folder` expects."""
    entries = [{"id": r["id"], "image": r["image"], "mask": r["mask"], "conversations": _llava_turns(r["messages"])}
               for r in records]
    write_json(out / LLAVA, entries)
    return out / LLAVA


def _tile(out: Path, record: dict, side: int) -> np.ndarray:
    image = cv2.imread(str(out / record["image"]), cv2.IMREAD_COLOR)
    scale = side / max(image.shape[:2])
    tile = np.zeros((side + 22, side, 3), np.uint8)
    small = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    tile[: small.shape[0], : small.shape[1]] = small
    if record["mask"]:
        mask = cv2.imread(str(out / record["mask"]), cv2.IMREAD_GRAYSCALE)
        mask = cv2.resize(mask, small.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours((mask > 127).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(tile, contours, -1, (0, 0, 255), 1)
        for region in record["ground_truth"]["regions"]:
            x0, y0, x1, y1 = (round(v * scale) for v in region["box"])
            cv2.rectangle(tile, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 255), 1)
        caption = f"{', '.join(record['defect_types'])} ({record['ground_truth']['severity']})"
    else:
        caption = "good"
    cv2.putText(tile, f"{record['id']} {caption}"[:40], (3, side + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def save_preview(out: Path, records: list[dict], count: int = 16, side: int = 256) -> Path:
    """A contact sheet of the first `count` samples: mask outline in red, boxes in yellow."""
    shown = records[:count]
    columns = min(4, len(shown))
    rows = math.ceil(len(shown) / columns)
    sheet = np.zeros((rows * (side + 22), columns * side, 3), np.uint8)
    for i, record in enumerate(shown):
        row, column = divmod(i, columns)
        sheet[row * (side + 22) : (row + 1) * (side + 22), column * side : (column + 1) * side] = _tile(out, record, side)
    write_png(out / PREVIEW, sheet, compression=6)
    return out / PREVIEW
