"""How a question reaches the model: system prompt, images, zoomed crops and the findings block.

Training data (synth) and inference build the first user turn with the same function,
so the model sees at inference exactly the layout it was tuned on.
"""

from __future__ import annotations

from PIL import Image

from ..errors import DatasetError
from ..prompts import load_yaml
from ..types import Findings, Region


def system_prompt(name: str = "assistant.yaml") -> str:
    text = load_yaml(name).get("system")
    if not isinstance(text, str):
        raise DatasetError(f"{name}: needs a 'system' prompt string")
    return text


def text_part(text: str) -> dict:
    return {"type": "text", "text": text}


def first_turn(question: str, findings: Findings, image_count: int = 1) -> dict:
    """The opening user message: the image(s), then the findings block as data, then the question."""
    parts = [{"type": "image"} for _ in range(image_count)]
    return {"role": "user", "content": parts + [text_part(f"{findings.block()}\n\n{question}")]}


def zoom_crops(image: Image.Image, regions: list[Region], count: int = 2, context: float = 0.5,
               min_side: int = 64) -> list[Image.Image]:
    """Crops around the strongest regions with `context` of their size around them ("look twice").

    A small defect is a few patches of a resized full view; a crop shows it at full resolution.
    """
    width, height = image.size
    crops = []
    for region in regions[:count]:
        x0, y0, x1, y1 = region.box
        half = max(x1 - x0, y1 - y0, min_side) * (1 + context) / 2
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        box = (max(0, round(cx - half)), max(0, round(cy - half)), min(width, round(cx + half)), min(height, round(cy + half)))
        crops.append(image.crop(box))
    return crops


def as_text_messages(messages: list[dict]) -> list[dict]:
    """Plain-string contents for text-only chat templates; image parts are dropped."""
    return [{"role": m["role"], "content": "\n".join(p["text"] for p in m["content"] if p.get("type") == "text")}
            for m in messages]
