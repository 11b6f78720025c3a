"""What a model is shown beyond the shared chat format: zoomed crops, and plain text for text-only models.

The turns themselves come from `anomaly_vlm.chat_format`, shared with the training data.
"""

from __future__ import annotations

from PIL import Image

from ..types import Region


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
