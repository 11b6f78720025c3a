"""Assistant backends, registered by name, behind one streaming interface.

`text`: any causal LM; it reads the findings block (images cannot reach it).
`vlm`: any transformers image-text-to-text model (LLaVA, LLaVA-OneVision, Qwen2-VL,
Idefics3/SmolVLM) through its processor and chat template; it sees the image, zoomed
crops of the strongest regions and the findings block.

The embedded text model (`model` None) comes with the package's default adapter
(anomaly_vlm/adapters/default/, trained on licence-clean synthesized data by
benchmarks/train_default_adapter.sh) unless `adapter` says otherwise: "none" turns it
off, a folder uses that one. Every description names the adapter it answers with.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from PIL import Image

from ..errors import AnomalyVLMError
from .models import resolve_model
from .prompting import as_text_messages


@dataclass
class GenerationSettings:
    max_new_tokens: int = field(default=256, metadata={"help": "longest answer, in tokens"})
    temperature: float = field(default=0.0, metadata={"help": "0 decodes greedily (reproducible answers)"})
    top_p: float = field(default=0.9, metadata={"help": "nucleus sampling mass when temperature > 0"})
    min_new_tokens: int = field(default=0, metadata={"help": "shortest answer (benchmarks fix the length)"})


@dataclass
class AssistantOptions:
    backend: Literal["text", "vlm"] = field(default="text", metadata={"help": "text: findings only; vlm: image too"})
    model: str | None = field(default=None, metadata={"help": "hub id, folder or .gguf; None: the embedded default"})
    adapter: str | None = field(default=None, metadata={
        "help": "LoRA adapter folder written by `tune`; none: no adapter. Unset: the embedded model's default "
                "adapter (shipped in the package), no adapter for any other model"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N"})
    quantize: bool = field(default=False, metadata={"help": "load 4-bit through bitsandbytes (CUDA only)"})
    precision: Literal["auto", "fp32", "bf16"] = field(
        default="auto", metadata={"help": "weights for answering; auto: bf16 on CUDA and on CPUs with native bf16"})


class Assistant(Protocol):
    images: bool
    """Whether the backend sees images (else only the findings text)."""

    def describe(self) -> dict: ...

    def stream(self, messages: list[dict], images: list[Image.Image], settings: GenerationSettings) -> Iterator[str]:
        """Answer the last user message of `messages` (chat format with content parts), piece by piece."""
        ...


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic (AVX512-BF16 or AMX): there bf16 weights halve the memory traffic of decoding."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _dtype(options: AssistantOptions, device: str, for_training: bool):
    """Inference dtype; training keeps fp32 weights (bf16 enters through autocast) except on CUDA."""
    import torch

    if options.precision == "fp32":
        return torch.float32
    if device.startswith("cuda") or options.precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if not for_training and cpu_has_bf16() else torch.float32


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _stream_generate(model, inputs: dict, tokenizer, settings: GenerationSettings) -> Iterator[str]:
    """Run `generate` in a thread and yield decoded text as tokens arrive."""
    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    sampling = {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p} \
        if settings.temperature > 0 else {"do_sample": False}
    kwargs = dict(inputs, streamer=streamer, max_new_tokens=settings.max_new_tokens,
                  min_new_tokens=settings.min_new_tokens,
                  pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
                  **sampling)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            model.generate(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread below
            errors.append(exc)
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield from (piece for piece in streamer if piece)
    thread.join()
    if errors:
        raise errors[0]


class TextAssistant:
    images = False

    def __init__(self, model, tokenizer, info: dict):
        self.model, self.tokenizer, self.info = model.eval(), tokenizer, info

    def describe(self) -> dict:
        return self.info

    def prompt_inputs(self, messages: list[dict]) -> dict:
        inputs = self.tokenizer.apply_chat_template(as_text_messages(messages), add_generation_prompt=True,
                                                    return_tensors="pt", return_dict=True)
        return {k: v.to(self.model.device) for k, v in inputs.items()}

    def stream(self, messages: list[dict], images: list[Image.Image], settings: GenerationSettings) -> Iterator[str]:
        return _stream_generate(self.model, self.prompt_inputs(messages), self.tokenizer, settings)


class VisionAssistant:
    images = True

    def __init__(self, model, processor, info: dict):
        self.model, self.processor, self.info = model.eval(), processor, info

    def describe(self) -> dict:
        return self.info

    def prompt_inputs(self, messages: list[dict], images: list[Image.Image]) -> dict:
        shown = sum(p.get("type") == "image" for m in messages for p in m["content"])
        if shown != len(images):
            raise ValueError(f"the messages hold {shown} image slots but {len(images)} images were given")
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        # One conversation's images as one nested list, as the processor's own chat-template path passes them:
        # LLaVA-OneVision reads a flat list as one image per sample and tiles each as a lone image (anyres),
        # several times the tokens of the multi-image layout it uses for images that share a prompt.
        inputs = self.processor(text=[text], images=[images] if images else None, return_tensors="pt")
        dtype = self.model.dtype
        return {k: v.to(self.model.device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()}

    def stream(self, messages: list[dict], images: list[Image.Image], settings: GenerationSettings) -> Iterator[str]:
        return _stream_generate(self.model, self.prompt_inputs(messages, images), self.processor.tokenizer, settings)


DEFAULT_ADAPTER = Path(__file__).resolve().parents[1] / "adapters" / "default"
"""The default adapter of the embedded model, shipped in the package (adapter.json names it)."""
NO_ADAPTER = "none"


def resolve_adapter(options: AssistantOptions, for_training: bool = False,
                    default: Path | None = None) -> Path | None:
    """The adapter folder `options` ask for, or None.

    `adapter` "none" (any case): none. A path: that folder. Unset: the default adapter
    when the model is the embedded one (`model` None) on the text backend and the package
    holds it; never for training, which starts from the bare model. `default` replaces
    the package's folder (tests).
    """
    spec = options.adapter
    if spec is not None and str(spec).strip().lower() == NO_ADAPTER:
        return None
    if spec:
        return Path(spec).expanduser()
    default = DEFAULT_ADAPTER if default is None else Path(default)
    if for_training or options.model is not None or options.backend != "text":
        return None
    return default if (default / "adapter_model.safetensors").is_file() else None


def adapter_identity(folder: str | Path) -> dict:
    """{"name", "version", "path"} of an adapter folder: from its adapter.json, else its folder name."""
    folder = Path(folder)
    try:
        info = json.loads((folder / "adapter.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = {}
    info = info if isinstance(info, dict) else {}
    return {"name": str(info.get("name") or folder.name), "version": info.get("version"), "path": str(folder)}


def _quantization(options: AssistantOptions):
    if not options.quantize:
        return None
    import torch

    if not torch.cuda.is_available():
        raise AnomalyVLMError("4-bit loading (QLoRA) needs a CUDA GPU with bitsandbytes; this machine has none. "
                              "Run without --qlora/--quantize on CPU.")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def load_model(options: AssistantOptions, for_training: bool = False) -> tuple[Any, Any, dict]:
    """(model, tokenizer or processor, description) for `options`, adapter applied when given."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    what = "text model" if options.backend == "text" else "vision-language model"
    resolved = resolve_model(options.model, what)
    device = _device(options.device)
    quantization = _quantization(options)
    dtype = _dtype(options, device, for_training)
    loader, preprocessor = (AutoModelForCausalLM, AutoTokenizer) if options.backend == "text" \
        else (AutoModelForImageTextToText, AutoProcessor)
    try:
        model = loader.from_pretrained(resolved.path, dtype=dtype, quantization_config=quantization,
                                       device_map={"": device} if quantization else None)
        processor = preprocessor.from_pretrained(resolved.path)
    except (OSError, ValueError, ImportError) as exc:  # ImportError: a processor's own package (SmolVLM: num2words)
        raise AnomalyVLMError(f"{resolved.source}: cannot be loaded as a {what} ({exc})") from None
    if not quantization:
        model = model.to(device)
    info = {"backend": options.backend, "model": resolved.source, "device": device, "dtype": str(dtype).split(".")[-1]}
    adapter = resolve_adapter(options, for_training)
    if adapter is not None:
        from .adapters import load_adapter

        model = load_adapter(model, adapter, trainable=for_training)
        if not for_training and not quantization:
            model = model.merge_and_unload()  # one matmul per projection again: adapters cost nothing at inference
        info["adapter"] = adapter_identity(adapter)
    return model, processor, info


def describe_assistant(info: dict) -> str:
    """One line naming an assistant's `describe()`: backend, model, adapter, device and dtype."""
    line = f"{info.get('backend', 'unnamed')} backend"
    line += f", {info['model']}" if "model" in info else ""
    adapter = info.get("adapter")
    if isinstance(adapter, dict):
        adapter = adapter.get("name", "") + (f" {adapter['version']}" if adapter.get("version") else "")
    line += f" + adapter {adapter}" if adapter else ""
    line += f" on {info['device']}" if "device" in info else ""
    return line + (f", {info['dtype']}" if "dtype" in info else "")


ASSISTANTS: dict[str, Callable[[Any, Any, dict], Assistant]] = {"text": TextAssistant, "vlm": VisionAssistant}


def build_assistant(options: AssistantOptions = AssistantOptions()) -> Assistant:
    if options.backend not in ASSISTANTS:
        raise AnomalyVLMError(f"unknown assistant backend {options.backend!r}; choose {', '.join(ASSISTANTS)}")
    return ASSISTANTS[options.backend](*load_model(options))
