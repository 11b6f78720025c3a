"""Tiny random assistant models built offline: a Llama-style causal LM and a LLaVA-style VLM."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from anomaly_vlm.prompts import load_yaml
from anomaly_vlm.proposals import LOCATIONS
from anomaly_vlm.synth.simulators import DEFECT_TYPES

TEXT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
VLM_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% for part in m['content'] %}{% if part['type'] == 'image' %}<image>{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["[UNK]", "[PAD]", "<|im_start|>", "<|im_end|>", "<image>"]


def _words() -> list[str]:
    """The words of the phrasebook and findings, so conversations tokenize to real ids."""
    text = str(load_yaml("conversations.yaml")) + str(load_yaml("assistant.yaml"))
    splitter = pre_tokenizers.Whitespace()
    words = {w for w, _ in splitter.pre_tokenize_str(text)}
    words |= {w for w, _ in splitter.pre_tokenize_str("findings image anomaly score above below threshold candidate "
                                                      "regions box of the peak % . , [ ] < > / ? :")}
    words |= {w for name in LOCATIONS + DEFECT_TYPES for w in name.split()} | {str(n) for n in range(100)}
    words |= {f"{n:02d}" for n in range(10)}
    return sorted(words)


def tiny_tokenizer(template: str = TEXT_TEMPLATE) -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(SPECIAL + [w for w in _words() if w not in SPECIAL])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   eos_token="<|im_end|>")
    fast.add_tokens(SPECIAL[2:], special_tokens=True)
    fast.chat_template = template
    return fast


def _text_config(vocab: int) -> LlamaConfig:
    return LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                       pad_token_id=1, eos_token_id=3, tie_word_embeddings=True)


def tiny_text_model(seed: int = 0):
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    return LlamaForCausalLM(_text_config(len(tokenizer))).eval(), tokenizer


def tiny_vlm(seed: int = 0):
    tokenizer = tiny_tokenizer(VLM_TEMPLATE)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default", chat_template=VLM_TEMPLATE,
        image_token="<image>", num_additional_image_tokens=1)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8)
    config = LlavaConfig(vision_config=vision, text_config=_text_config(len(tokenizer)),
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_select_strategy="default", vision_feature_layer=-1)
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config).eval(), processor


class ScriptedAssistant:
    """Answers from a list; records what it was shown."""

    images = False

    def __init__(self, answers):
        self.answers, self.seen = list(answers), []

    def describe(self):
        return {"backend": "scripted"}

    def stream(self, messages, images, settings):
        self.seen.append(messages)
        yield from (word + " " for word in self.answers.pop(0).split(" "))


class FindingsAssistant:
    """Answers from the findings block it was shown, word by word: each session's answer names its own regions."""

    images = False

    def describe(self):
        return {"backend": "findings-echo", "model": "test", "device": "cpu"}

    def stream(self, messages, images, settings):
        findings = messages[1]["content"][-1]["text"]
        locations = [line.split(". ", 1)[1].split(",")[0] for line in findings.splitlines() if line[:1].isdigit()]
        answer = f"Yes, there is a defect at the {locations[0]}." if locations else "No anomaly found."
        yield from (word + " " for word in answer.split(" "))
