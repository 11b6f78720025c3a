"""The `vlm` backend across the model families users pick, each as a tiny random model saved to a folder.

One table-driven suite over `VLM_FAMILIES` (tests/assistant_models.py): every family is loaded
through the package's own path (`--backend vlm --model FOLDER`, i.e. AutoModelForImageTextToText
and AutoProcessor on a folder written by `save_pretrained`), then asked about an inspection with
its image and zoomed crops, run through `eval-mmad` and `chat`, and LoRA-tuned for one step.
The answers are random text; what is checked is that images, image tokens and the chat template
reach the model in the layout its processor defines, for every family.
"""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
import torch
from peft import LoraConfig
from PIL import Image

from anomaly_vlm.assistant.adapters import LANGUAGE_SCOPES, add_adapter
from anomaly_vlm.assistant.backends import AssistantOptions, GenerationSettings, VisionAssistant, build_assistant
from anomaly_vlm.assistant.dialogue import Dialogue
from anomaly_vlm.cli import main
from anomaly_vlm.errors import AnomalyVLMError
from anomaly_vlm.types import Inspection

from .assistant_models import VLM_FAMILIES, save_vlm
from .test_assistant import FINDINGS
from .test_mmad import BUILTIN, mmad_file

MODEL_CLASSES = {
    "llava": "LlavaForConditionalGeneration",
    "llava_onevision": "LlavaOnevisionForConditionalGeneration",
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "idefics3": "Idefics3ForConditionalGeneration",
    "smolvlm": "SmolVLMForConditionalGeneration",
}
"""The class `AutoModelForImageTextToText` must resolve each saved family to."""

NEEDS = {"smolvlm": "num2words"}
"""Packages a family's processor imports that this project does not depend on: without them, that case is skipped."""




def _param(name: str, tuning: bool = False):
    package = NEEDS.get(name)
    missing = package is not None and importlib.util.find_spec(package) is None
    reason = (f"SmolVLMProcessor.__init__ raises ImportError without the '{package}' package (it spells out "
              f"video frame counts); it is not installed here: pip install {package}")
    marks = [pytest.mark.skipif(missing, reason=reason)]
    return pytest.param(name, id=name, marks=marks)


FAMILIES = [_param(name) for name in VLM_FAMILIES]
SHORT = ["--max-new-tokens", "4", "--device", "cpu"]


def test_every_registered_family_names_its_model_class():
    assert set(VLM_FAMILIES) == set(MODEL_CLASSES)


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory):
    """(name, model folder) for one family, saved once per module."""
    name = request.param
    return name, save_vlm(VLM_FAMILIES[name], tmp_path_factory.mktemp(name))


def _image_token_id(model) -> int:
    config = model.config
    return config.image_token_id if getattr(config, "image_token_id", None) is not None else config.image_token_index


def test_the_family_loads_through_the_package_and_streams_an_answer_about_an_image(family):
    name, folder = family
    assistant = build_assistant(AssistantOptions(backend="vlm", model=str(folder), device="cpu"))
    assert isinstance(assistant, VisionAssistant) and type(assistant.model).__name__ == MODEL_CLASSES[name]
    assert assistant.describe()["backend"] == "vlm" and str(folder) in assistant.describe()["model"]
    image = Image.new("RGB", (64, 64), (90, 90, 90))
    image.paste((200, 40, 40), (42, 10, 58, 18))
    inspection = Inspection("part.png", 0.82, 0.5, FINDINGS.regions, {"mode": "test"})
    settings = GenerationSettings(max_new_tokens=4, min_new_tokens=4)
    dialogue = Dialogue(assistant, inspection, image=image, settings=settings)
    assert len(dialogue.images) == 3                                 # the image and a crop around each region

    opening = dialogue.messages + [dialogue._user("Is anything wrong?")]
    inputs = assistant.prompt_inputs(opening, dialogue.images)
    image_tokens = int((inputs["input_ids"] == _image_token_id(assistant.model)).sum())
    assert image_tokens >= 3 and "pixel_values" in inputs          # at least one placeholder per image, expanded
    text = assistant.processor.tokenizer.decode(inputs["input_ids"][0])
    assert "findings" in text and "top right" in text
    shown = iter(dialogue.images)   # the layout transformers itself builds from a conversation with inline images
    inline = [{**m, "content": [{**p, "image": next(shown)} if p["type"] == "image" else p for p in m["content"]]}
              for m in opening]
    reference = assistant.processor.apply_chat_template(inline, add_generation_prompt=True, tokenize=True,
                                                        return_dict=True, return_tensors="pt")
    assert torch.equal(reference["input_ids"], inputs["input_ids"])
    assert torch.equal(reference["pixel_values"].to(inputs["pixel_values"].dtype), inputs["pixel_values"])

    pieces = list(dialogue.ask("Is anything wrong?"))
    with torch.no_grad():
        full = assistant.model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False,
                                        pad_token_id=assistant.processor.tokenizer.pad_token_id)
    new = full[0, inputs["input_ids"].shape[1]:]
    assert len(new) == 4
    expected = assistant.processor.tokenizer.decode(new, skip_special_tokens=True)
    assert "".join(pieces).split() == expected.split() == dialogue.turns[0].answer.split()
    list(dialogue.ask("Where exactly?"))                            # a follow-up: text only, images stay in turn one
    assert len(dialogue.turns) == 2 and len(dialogue.messages) == 5


def test_the_family_answers_every_mmad_question(family, dataset_root, tmp_path, capsys):
    name, folder = family
    data = mmad_file(dataset_root, tmp_path / "mmad.json", per_folder=2)
    out = tmp_path / "out"
    assert main(["eval-mmad", "--data", str(tmp_path / "mmad.json"), "--root", str(dataset_root), "--out", str(out),
                 "--backend", "vlm", "--model", str(folder), *BUILTIN, "--max-new-tokens", "4"]) == 0
    assert f"assistant: vlm backend, {folder} (local)" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    questions = {(key, i) for key, entry in data.items() for i in range(len(entry["conversation"]))}
    assert {(r["image"], r["index"]) for r in rows} == questions and len(rows) == len(questions)
    assert all(isinstance(r["raw_answer"], str) and r["correct"] == (r["letter"] == r["correct_answer"]) for r in rows)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["counts"]["questions"] == len(questions) and metrics["counts"]["failed_images"] == 0
    assert metrics["assistant"]["backend"] == "vlm" and metrics["settings"]["assistant"]["backend"] == "vlm"
    assert set(metrics["per_type"]) == {"Anomaly Detection", "Defect Classification", "Object Analysis"}


def test_the_family_chats_about_an_image_on_the_command_line(family, dataset_root, capsys):
    name, folder = family
    image = sorted((dataset_root / "widget" / "test").glob("*/000.png"))[-1]
    assert main(["chat", str(image), "--question", "Is it defective?", "--backend", "vlm", "--model", str(folder),
                 "--references", str(dataset_root / "widget" / "train"), "--features", "builtin", *SHORT]) == 0
    printed = capsys.readouterr().out
    assert "verdict:" in printed and "assistant> " in printed and "vlm backend" in printed


def test_lora_adapts_only_the_language_model_of_the_family(family):
    name, _ = family
    model, _ = VLM_FAMILIES[name](0)
    peft_model = add_adapter(model, LoraConfig(r=4, lora_alpha=8))
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and any(s in n.split(".") for s in LANGUAGE_SCOPES) for n in trainable)


@pytest.mark.parametrize("family", [_param(name, tuning=True) for name in VLM_FAMILIES], indirect=True)
def test_tune_runs_a_lora_step_on_the_family_and_chat_reads_the_adapter(family, conversations, tmp_path, capsys):
    name, folder = family
    out = tmp_path / "adapter"
    assert main(["tune", "--data", str(conversations), "--out", str(out), "--backend", "vlm", "--model", str(folder),
                 "--device", "cpu", "--max-samples", "2", "--batch-size", "2", "--rank", "4", "--precision", "fp32",
                 "--max-length", "1024"]) == 0
    assert "1 steps" in capsys.readouterr().out
    record = json.loads((out / "tune.json").read_text())
    assert record["steps"] == 1 and len(record["losses"]) == 1 and record["base"]["backend"] == "vlm"
    assert (out / "adapter_model.safetensors").is_file()
    assistant = build_assistant(AssistantOptions(backend="vlm", model=str(folder), adapter=str(out), device="cpu"))
    assert not any("lora_" in n for n, _ in assistant.model.named_parameters())    # merged for answering
    image = Image.new("RGB", (64, 64), (90, 90, 90))
    dialogue = Dialogue(assistant, Inspection("part.png", 0.82, 0.5, FINDINGS.regions, {}), image=image,
                        settings=GenerationSettings(max_new_tokens=2, min_new_tokens=2))
    list(dialogue.ask("Is anything wrong?"))
    assert len(dialogue.turns) == 1


def test_a_processor_that_needs_a_missing_package_is_one_clear_error(tmp_path, monkeypatch):
    from transformers.models.smolvlm import processing_smolvlm

    monkeypatch.setattr(processing_smolvlm, "num2words", str)   # a stand-in, so the folder can be written here
    folder = save_vlm(VLM_FAMILIES["smolvlm"], tmp_path / "smolvlm")
    monkeypatch.setattr(processing_smolvlm, "num2words", None)  # as on a machine without the package
    with pytest.raises(AnomalyVLMError, match=re.escape(f"{folder} (local): cannot be loaded") + ".*num2words"):
        build_assistant(AssistantOptions(backend="vlm", model=str(folder), device="cpu"))
