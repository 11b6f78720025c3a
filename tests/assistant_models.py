"""Tiny random assistant models built offline: a Llama-style causal LM and one VLM per supported family.

`VLM_FAMILIES` maps a family name to a builder `(seed) -> (model, processor)`; each builds the
family's real model and processor classes from small configs (a word-level tokenizer with the
family's special image tokens and a chat template in its layout), so `save_pretrained` writes
a folder that `AutoModelForImageTextToText` / `AutoProcessor` read back as that family.
"""

from __future__ import annotations

from collections.abc import Callable

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

from anomaly_vlm.templates import load_yaml
from anomaly_vlm.vocabulary import DEFECT_TYPES, LOCATIONS

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


def tiny_tokenizer(template: str = TEXT_TEMPLATE, special: tuple[str, ...] = (), words: tuple[str, ...] = (),
                   eos: str = "<|im_end|>") -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the phrasebook; `special`: a family's extra tokens (image markers, turn ends)."""
    base = SPECIAL + [w for w in sorted(set(_words()) | set(words)) if w not in SPECIAL]
    vocab = {token: i for i, token in enumerate(base)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   eos_token="<|im_end|>")
    fast.add_tokens(SPECIAL[2:] + [t for t in special if t not in SPECIAL], special_tokens=True)
    if eos != fast.eos_token:   # a family's own turn end, known only once its special tokens are added
        fast.eos_token = eos
    fast.chat_template = template
    return fast


TINY_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=2048, pad_token_id=1)
"""A 2-layer, 32-wide language model (head size 8); each family wraps its own text architecture around it."""


def _text_config(vocab: int) -> LlamaConfig:
    return LlamaConfig(vocab_size=vocab, eos_token_id=3, tie_word_embeddings=True, **TINY_TEXT)


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


# ---------------------------------------------------------------- one tiny VLM per family

VLM_FAMILIES: dict[str, Callable[[int], tuple]] = {}
"""Family name -> builder `(seed) -> (model, processor)`; tests parametrize over it (add a family here)."""


def vlm_family(name: str):
    def register(build):
        VLM_FAMILIES[name] = build
        return build
    return register


def _chat_template(image: str, turn: str = "<|im_start|>{{ m['role'] }}\n", end: str = "<|im_end|>\n",
                   generation: str = "<|im_start|>assistant\n") -> str:
    """A chat template in a family's layout: `image` stands where each image part is, `turn` opens a message."""
    return ("{% for m in messages %}" + turn + "{% for part in m['content'] %}{% if part['type'] == 'image' %}"
            + image + "{% else %}{{ part['text'] }}{% endif %}{% endfor %}" + end + "{% endfor %}"
            "{% if add_generation_prompt %}" + generation + "{% endif %}")


def save_vlm(build: Callable[[int], tuple], folder, seed: int = 0):
    """A model folder as a user would download it: weights, config, processor, tokenizer, chat template."""
    model, processor = build(seed)
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder


# LLaVA-1.5: CLIP tower, 16 patch tokens per 32 px image, `<image>` in a ChatML template
vlm_family("llava")(lambda seed=0: tiny_vlm(seed))


@vlm_family("llava_onevision")
def tiny_llava_onevision(seed: int = 0):
    """SigLIP tower and anyres tiling: 32 px tiles on a 32/64 px pinpoint grid, plus the `<video>` token."""
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor)

    tokenizer = tiny_tokenizer(VLM_TEMPLATE, special=("<video>",))
    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size={"height": 32, "width": 32}, image_grid_pinpoints=pinpoints),
        video_processor=LlavaOnevisionVideoProcessor(size={"height": 32, "width": 32}),
        tokenizer=tokenizer, num_image_tokens=16, vision_feature_select_strategy="full", chat_template=VLM_TEMPLATE)
    config = LlavaOnevisionConfig(
        text_config=dict(model_type="qwen2", vocab_size=len(tokenizer), eos_token_id=3, **TINY_TEXT),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full", vision_feature_layer=-1, image_grid_pinpoints=pinpoints)
    torch.manual_seed(seed)
    return LlavaOnevisionForConditionalGeneration(config).eval(), processor


QWEN_MARKERS = ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>")


def _tiny_qwen_vl(seed: int, version: str):
    """Qwen2-VL / Qwen2.5-VL: 8 px patches merged 2x2, 32-64 px images, M-RoPE over (time, height, width)."""
    import transformers

    prefix = "Qwen2VL" if version == "2" else "Qwen2_5_VL"
    template = _chat_template("<|vision_start|><|image_pad|><|vision_end|>")
    tokenizer = tiny_tokenizer(template, special=QWEN_MARKERS)
    patches = dict(patch_size=8, merge_size=2, temporal_patch_size=2)
    processor = getattr(transformers, f"{prefix}Processor")(
        image_processor=transformers.Qwen2VLImageProcessor(min_pixels=32 * 32, max_pixels=64 * 64, **patches),
        video_processor=transformers.Qwen2VLVideoProcessor(min_pixels=32 * 32, max_pixels=64 * 64, **patches),
        tokenizer=tokenizer, chat_template=template)
    vision = dict(depth=2, hidden_size=32, num_heads=2, patch_size=8, spatial_merge_size=2, temporal_patch_size=2)
    if version == "2":
        vision.update(embed_dim=32, mlp_ratio=2)
    else:   # windowed attention (2 x 2 merged patches a window) in block 0, full attention in block 1
        vision.update(intermediate_size=64, out_hidden_size=32, window_size=32, fullatt_block_indexes=[1])
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_MARKERS}
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]}   # sums to head size / 2
    config = getattr(transformers, f"{prefix}Config")(
        text_config=dict(vocab_size=len(tokenizer), eos_token_id=3, bos_token_id=None, rope_parameters=rope,
                         **TINY_TEXT),
        vision_config=vision, image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(seed)
    return getattr(transformers, f"{prefix}ForConditionalGeneration")(config).eval(), processor


vlm_family("qwen2_vl")(lambda seed=0: _tiny_qwen_vl(seed, "2"))
vlm_family("qwen2_5_vl")(lambda seed=0: _tiny_qwen_vl(seed, "2.5"))

IDEFICS_MARKERS = ("<fake_token_around_image>", "<global-img>", "<end_of_utterance>",
                   *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)))


def _tiny_idefics3(seed: int, smolvlm: bool):
    """Idefics3 / SmolVLM: 64 px images split into 32 px tiles + a global view, 4 tokens a tile (pixel shuffle 2)."""
    import transformers

    prefix = "SmolVLM" if smolvlm else "Idefics3"
    template = _chat_template("<image>", turn="<|im_start|>{{ m['role'] | capitalize }}:", end="<end_of_utterance>\n",
                              generation="<|im_start|>Assistant:")
    tokenizer = tiny_tokenizer(template, special=IDEFICS_MARKERS, words=("System", "User", "Assistant"),
                               eos="<end_of_utterance>")
    sizes = dict(size={"longest_edge": 64}, max_image_size={"longest_edge": 32})
    extra = {"video_processor": transformers.SmolVLMVideoProcessor(**sizes)} if smolvlm else {}
    processor = getattr(transformers, f"{prefix}Processor")(
        image_processor=getattr(transformers, f"{prefix}ImageProcessor")(**sizes), tokenizer=tokenizer,
        image_seq_len=4, chat_template=template, **extra)
    config = getattr(transformers, f"{prefix}Config")(
        text_config=dict(model_type="llama", vocab_size=len(tokenizer),
                         eos_token_id=tokenizer.convert_tokens_to_ids("<end_of_utterance>"), **TINY_TEXT),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), scale_factor=2)
    torch.manual_seed(seed)
    return getattr(transformers, f"{prefix}ForConditionalGeneration")(config).eval(), processor


vlm_family("idefics3")(lambda seed=0: _tiny_idefics3(seed, smolvlm=False))
vlm_family("smolvlm")(lambda seed=0: _tiny_idefics3(seed, smolvlm=True))


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
