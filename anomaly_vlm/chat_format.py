"""How findings and questions become chat turns: the system prompt, text parts and the first user turn.

Messages use the chat format of transformers and TRL: a role and a list of content
parts. Training data (synth) and inference (assistant) build the first user turn with
the same function, so the model sees at inference exactly the layout it was tuned on.
"""

from __future__ import annotations

from .errors import DatasetError
from .templates import load_yaml
from .types import Findings


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
