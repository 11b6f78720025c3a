"""The assistant with tiny random models: prompts, streaming, LoRA tuning, adapters, dialogue checks, evaluation."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from peft import LoraConfig
from PIL import Image

from anomaly_vlm.assistant.adapters import add_adapter, load_adapter, target_modules
from anomaly_vlm.assistant.backends import AssistantOptions, GenerationSettings, TextAssistant, VisionAssistant, load_model
from anomaly_vlm.assistant.dialogue import (Dialogue, answer_flags, contradictions, named_locations, repeats_itself,
                                            says_anomalous)
from anomaly_vlm.assistant.evaluation import evaluate_chat
from anomaly_vlm.assistant.models import resolve_model
from anomaly_vlm.assistant.prompting import zoom_crops
from anomaly_vlm.assistant.tuning import (IGNORE, ConversationEncoder, TuneConfig, answer_loss, answer_weights, collate,
                                          epoch_batches, tune)
from anomaly_vlm.chat_format import first_turn, system_prompt, text_part
from anomaly_vlm.errors import AnomalyVLMError, CheckpointError, WeightsNotFoundError
from anomaly_vlm.proposals import make_region
from anomaly_vlm.types import Findings, Inspection

from .assistant_models import ScriptedAssistant, tiny_text_model, tiny_vlm

FINDINGS = Findings(0.82, 0.5, [make_region((40, 8, 60, 20), 64, 64, 200, 0.91, 0.7),
                                make_region((2, 50, 10, 60), 64, 64, 50, 0.55, 0.52)])


def _opening(images: int = 1) -> list[dict]:
    return [{"role": "system", "content": [text_part(system_prompt())]}, first_turn("Is anything wrong?", FINDINGS, images)]


def test_text_prompt_holds_the_findings_and_no_image():
    model, tokenizer = tiny_text_model()
    text = tokenizer.decode(TextAssistant(model, tokenizer, {}).prompt_inputs(_opening())["input_ids"][0])
    assert "findings" in text and "top right" in text and "0 . 91" in text
    assert text.rstrip().endswith("assistant") and "<image>" not in text


def test_vlm_prompt_holds_every_image_and_the_findings():
    model, processor = tiny_vlm()
    image = Image.new("RGB", (64, 64), (90, 90, 90))
    crops = zoom_crops(image, FINDINGS.regions, count=2)
    assert [c.size for c in crops] == [(62, 62), (54, 57)]   # 1.5 x the 20 px box (clipped), 1.5 x the 64 px minimum
    inputs = VisionAssistant(model, processor, {}).prompt_inputs(_opening(3), [image] + crops)
    image_tokens = int((inputs["input_ids"] == model.config.image_token_index).sum())
    assert image_tokens == 3 * 16 and inputs["pixel_values"].shape[0] == 3
    assert "findings" in processor.tokenizer.decode(inputs["input_ids"][0])
    with pytest.raises(ValueError, match="3 image slots but 1 images"):
        VisionAssistant(model, processor, {}).prompt_inputs(_opening(3), [image])


@pytest.mark.parametrize("build", [tiny_text_model, tiny_vlm])
def test_generation_streams_the_greedy_answer(build):
    model, preprocessor = build()
    assistant = TextAssistant(model, preprocessor, {}) if build is tiny_text_model else VisionAssistant(model, preprocessor, {})
    images = [Image.new("RGB", (32, 32))] if assistant.images else []
    pieces = list(assistant.stream(_opening(len(images)), images, GenerationSettings(max_new_tokens=6)))
    assert len(pieces) > 1
    inputs = assistant.prompt_inputs(_opening(), images) if assistant.images else assistant.prompt_inputs(_opening())
    tokenizer = getattr(preprocessor, "tokenizer", preprocessor)
    full = model.generate(**inputs, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    expected = tokenizer.decode(full[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "".join(pieces).split() == expected.split()


def test_answer_masking_trains_on_answers_only():
    model, tokenizer = tiny_text_model()
    messages = _opening() + [{"role": "assistant", "content": [text_part("Yes, a scratch at the top right.")]},
                             {"role": "user", "content": [text_part("How bad is it?")]},
                             {"role": "assistant", "content": [text_part("No.")]}]
    item = ConversationEncoder(tokenizer, images=False, max_length=4096)(messages)
    trained = tokenizer.decode(item["input_ids"][item["labels"] != IGNORE])
    assert trained.split() == "Yes , a scratch at the top right . <|im_end|> No . <|im_end|>".split()
    assert (item["labels"] != IGNORE).sum() < len(item["labels"]) / 3


def test_lora_targets_the_language_model_only():
    model, _ = tiny_vlm()
    names = target_modules(model, "language")
    assert names and all("language_model" in n for n in names)
    assert any("vision_tower" in n for n in target_modules(model, "all"))
    peft_model = add_adapter(model, LoraConfig(r=4, lora_alpha=8))
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "language_model" in n for n in trainable)


def test_answer_weights_count_each_answer_once():
    x = IGNORE
    targets = torch.tensor([[x, 5, x, x, 7, 8, 9, 9],   # a one-token answer, then a four-token one
                            [x, x, 3, 3, x, x, x, x]])  # one two-token answer
    weights = answer_weights(targets, "answer")
    assert torch.allclose(weights[0], torch.tensor([0, 1 / 3, 0, 0, 1 / 12, 1 / 12, 1 / 12, 1 / 12]))
    assert torch.allclose(weights[1], torch.tensor([0, 0, 1 / 6, 1 / 6, 0, 0, 0, 0]))
    assert torch.allclose(weights.sum(), torch.tensor(1.0))
    tokens = answer_weights(targets, "token")
    assert torch.allclose(tokens[targets != IGNORE], torch.full((7,), 1 / 7)) and (tokens[targets == IGNORE] == 0).all()
    ends_and_starts = torch.tensor([[x, 1, 1], [2, 2, x]])  # a run at a row's end does not run into the next row
    assert torch.allclose(answer_weights(ends_and_starts), torch.tensor([[0, 0.25, 0.25], [0.25, 0.25, 0]]))


@pytest.mark.parametrize("build", [tiny_text_model, tiny_vlm])
def test_a_lora_step_lowers_the_loss_and_the_adapter_reloads_exactly(build, tmp_path):
    model, preprocessor = build()
    images = build is tiny_vlm
    encode = ConversationEncoder(preprocessor, images, 512)
    messages = _opening(int(images)) + [{"role": "assistant", "content": [text_part("Yes, a scratch at the top right.")]}]
    pad = getattr(preprocessor, "tokenizer", preprocessor).pad_token_id
    batch = collate([encode(messages, [Image.new("RGB", (32, 32), (200, 30, 30))] if images else None)] * 2, pad)
    peft_model = add_adapter(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0))
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        loss = answer_loss(peft_model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.1
    peft_model.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        expected = peft_model(**inputs).logits
    peft_model.save_pretrained(str(tmp_path), safe_serialization=True)
    assert (tmp_path / "adapter_model.safetensors").is_file()
    fresh, _ = build()
    reloaded = load_adapter(fresh, tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**inputs).logits, expected)
        assert not torch.allclose(build()[0](**inputs).logits, expected)   # the adapter changed the answer
    if not images:   # loading for chat merges the adapter into the weights: same logits, plain modules
        base = tmp_path / "base"
        fresh, tokenizer = build()
        fresh.save_pretrained(str(base), safe_serialization=True)
        tokenizer.save_pretrained(str(base))
        merged, _, info = load_model(AssistantOptions(model=str(base), adapter=str(tmp_path), device="cpu",
                                                      precision="fp32"))
        assert info["adapter"]["path"] == str(tmp_path) and not any("lora_" in n for n, _ in merged.named_parameters())
        with torch.no_grad():
            torch.testing.assert_close(merged.eval()(**inputs).logits, expected, atol=1e-5, rtol=1e-4)


def test_adapter_errors_name_the_folder(tmp_path):
    model, _ = tiny_text_model()
    with pytest.raises(CheckpointError, match="no adapter_config.json"):
        load_adapter(model, tmp_path)
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="pickled .bin is not read"):
        load_adapter(model, tmp_path)


def test_tune_writes_a_resumable_adapter(conversations, tmp_path):
    config = TuneConfig(batch_size=2, save_every=1, max_length=512, precision="fp32", r=4, lora_alpha=8)
    options = AssistantOptions(backend="text")
    first = tune(options, conversations, tmp_path, config, progress=False, model_and_preprocessor=tiny_text_model())
    assert first.steps == 3 and len(first.losses) == 3 and all(np.isfinite(first.losses))
    assert (tmp_path / "adapter_model.safetensors").is_file()
    saved = json.loads((tmp_path / "tune.json").read_text())
    assert saved["conversations"] == 6 and saved["losses"] == first.losses
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2
    resumed = tune(options, conversations, tmp_path, config, resume=True, progress=False,
                   model_and_preprocessor=tiny_text_model())
    assert resumed.losses[:2] == first.losses[:2] and len(resumed.losses) == 3
    assert resumed.losses[2] == pytest.approx(first.losses[2], rel=1e-4)


def test_epoch_batches_cover_every_conversation_once_with_similar_lengths():
    lengths = list(np.random.default_rng(0).integers(50, 500, size=37))
    batches = epoch_batches(lengths, 4, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(37)) and len(batches) == 10
    assert batches == epoch_batches(lengths, 4, seed=1, epoch=0) != epoch_batches(lengths, 4, seed=1, epoch=1)


@pytest.mark.parametrize("answer,verdict", [
    ("Yes. The bottle is defective: I see a scratch at the top.", True),
    ("No. The bottle looks normal; I see no defect.", False),
    ("It passes: no anomaly is visible on this bottle.", False),
    ("It does not pass: there is a crack at the left.", True),
    ("The image shows a bottle.", None),
])
def test_verdicts_are_read_from_answers(answer, verdict):
    assert says_anomalous(answer) is verdict


def test_contradictions_are_flagged():
    assert contradictions("Yes, a scratch at the top right.", FINDINGS) == []
    assert named_locations("At the top left and the top.") == ["top left", "top"]
    flags = contradictions("No anomaly; the part looks normal.", FINDINGS)
    assert len(flags) == 1 and "top right (peak 0.91)" in flags[0]
    flags = contradictions("There is a stain at the center.", FINDINGS)
    assert flags == ["names the center, where the localizer has regions only at the bottom left, top right"]
    weak = Findings(0.3, 0.5, [])
    assert contradictions("No defect found.", weak) == []
    review = Findings(0.42, 0.5, FINDINGS.regions[1:], review_threshold=0.35)
    flags = contradictions("No defect found.", review)
    assert flags == ["calls the part normal, but its score 0.42 is in the REVIEW band (0.35 to 0.50): "
                     "the localizer is unsure, and a person should look"]
    assert contradictions("Yes, there is a stain at the bottom left.", review) == []
    assert contradictions("No defect found.", Findings(0.3, 0.5, [], review_threshold=0.35)) == []
    fail = Findings(0.9973, 0.5, FINDINGS.regions)
    for right in ("Yes: the image scores 0.9973, above the threshold 0.50.", "A score of 1.00 against 0.50.",
                  "Its score 0.997 is above the threshold."):
        assert contradictions(right, fail) == [], right
    flags = contradictions("Uncertain: the region is compact, and the image score 0.20 is overline.", fail)
    assert flags == ["quotes the image score as 0.20, but it is 0.997"]
    assert contradictions("The peak score 0.91 is at the top right.", fail) == []     # a region's score, not the image's


def test_looping_answers_are_flagged():
    loop = "The part is defective, it is 24.7% of the image, it is 24.7% of the image, it is 24.7% of the image."
    assert repeats_itself(loop) and not repeats_itself("Yes. A scratch at the top right, about 2% of the image.")
    assert not repeats_itself("Yes. Yes. Yes.")                       # too short to count as a loop
    assert repeats_itself("The part is defective, it is a type of a type of a type of a type of a")   # no punctuation
    assert not repeats_itself("A scratch, then a scratch on the rim, and a small scratch near the base.")
    assert answer_flags(loop, FINDINGS) == ["repeats itself; treat it as unreliable"]


def test_dialogue_keeps_history_and_flags_contradictions():
    inspection = Inspection("part.png", 0.82, 0.5, FINDINGS.regions, {"mode": "test"})
    assistant = ScriptedAssistant(["No anomaly here.", "At the top right."])
    dialogue = Dialogue(assistant, inspection)
    assert "".join(dialogue.ask("Is it defective?")) == "No anomaly here. "
    list(dialogue.ask("Where?"))
    first_prompt, second_prompt = assistant.seen
    assert "<findings>" in first_prompt[-1]["content"][-1]["text"]
    assert second_prompt[-1]["content"] == [text_part("Where?")] and len(second_prompt) == 4
    assert dialogue.turns[0].flags and not dialogue.turns[1].flags


class OracleAssistant:
    """Answers each question with the reference answer of the conversation being evaluated."""

    images = False

    def __init__(self, dataset):
        self.references = {}
        for row in dataset:
            for i, m in enumerate(row["messages"][:-1]):
                if m["role"] == "user":
                    key = (row["id"], i)
                    self.references[key] = row["messages"][i + 1]["content"][0]["text"]
        self.ids = {row["messages"][1]["content"][-1]["text"]: row["id"] for row in dataset}

    def describe(self):
        return {"backend": "oracle"}

    def stream(self, messages, images, settings):
        yield self.references[(self.ids[messages[1]["content"][-1]["text"]], len(messages) - 1)]


def test_eval_chat_scores_reference_answers_as_correct(conversations):
    from datasets import load_from_disk

    dataset = load_from_disk(str(conversations / "dataset"))
    result = evaluate_chat(OracleAssistant(dataset), dataset, progress=False)
    metrics, counts = result.metrics, result.counts
    assert counts["detection_accuracy"] == 6 and metrics["detection_accuracy"] == 1.0
    assert metrics["false_alarm_rate"] in (0.0, None)
    for name in ("location_accuracy", "type_accuracy"):
        assert metrics[name] in (1.0, None)
    assert "detection_accuracy" in result.table() and len(result.answers) == sum(len(r["intents"]) for r in dataset)


def test_missing_models_and_cpu_qlora_give_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(WeightsNotFoundError, match="not a model folder"):
        resolve_model(str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="GGUF file not found"):
        resolve_model(str(tmp_path / "model.gguf"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("anomaly_vlm.assistant.backends.resolve_model", lambda spec, what: None)
    with pytest.raises(AnomalyVLMError, match="needs a CUDA GPU"):
        load_model(AssistantOptions(model="any/model", quantize=True))


def test_bitsandbytes_offline_kernel_notice_is_dropped_and_its_other_warnings_kept(caplog):
    import anomaly_vlm.assistant  # noqa: F401  (installs the filter)

    log = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING):
        log.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please ...", "hub unreachable")
        log.warning("another bitsandbytes warning")
    assert [r.getMessage() for r in caplog.records] == ["another bitsandbytes warning"]
    # importing peft (which imports bitsandbytes) after the package prints no such notice
    run = subprocess.run([sys.executable, "-c", "import anomaly_vlm.assistant, peft"], capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "gemm_4bit_forward" not in run.stderr
