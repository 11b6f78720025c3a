"""Where CLIP weights come from: a pretrained tag, a local file or folder, a hub id, or none.

Lookups go to the local cache first and only then to the hub, and a hub that cannot
be reached is detected at once: on an air-gapped line a missing file must produce
a clear instruction in a second, not a minute of retries.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import open_clip

from ..errors import WeightsNotFoundError

NO_WEIGHTS = "none"
HUB_CHECKPOINT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
CHECKPOINT_NAMES = (*HUB_CHECKPOINT_NAMES, "model.safetensors")


@dataclass(frozen=True)
class ResolvedWeights:
    """What `open_clip.create_model` needs, plus a human-readable provenance string."""

    model_name: str
    checkpoint: str | None
    source: str
    quick_gelu: bool


def hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_reachable() -> bool:
    """A quick name lookup of the hub endpoint: fails at once on air-gapped machines."""
    if hub_offline():
        return False
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or ""
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def _hub_file(repo_id: str, filenames: tuple[str, ...], cache_dir: str | None, what: str) -> str:
    """First of `filenames` found in the cache, else downloaded, else a clear error."""
    from huggingface_hub import hf_hub_download

    for name in filenames:
        try:
            return hf_hub_download(repo_id, name, cache_dir=cache_dir, local_files_only=True)
        except Exception:
            continue
    reason = "the model hub cannot be reached" + (" (HF_HUB_OFFLINE is set)" if hub_offline() else "")
    if hub_reachable():
        errors = []
        for name in filenames:
            try:
                return hf_hub_download(repo_id, name, cache_dir=cache_dir)
            except Exception as exc:
                errors.append(f"{name}: {exc}")
        reason = "the hub did not provide it (" + "; ".join(errors) + ")"
    cache = cache_dir or os.environ.get("HF_HUB_CACHE") or "~/.cache/huggingface/hub"
    filename = filenames[0]
    raise WeightsNotFoundError(
        f"{what}: '{filename}' of hub repo '{repo_id}' is not in the local cache ({cache}) and {reason}.\n"
        f"To provide it: download '{filename}' from hub repo '{repo_id}' on a connected machine and either\n"
        f"  - pass its path: --weights /path/to/{filename}, or\n"
        f"  - copy the hub cache folder 'models--{repo_id.replace('/', '--')}' into {cache}.\n"
        f"Or run with --weights none (random weights: plumbing checks only)."
    )


def resolve_weights(
    model_name: str, weights: str | None, cache_dir: str | None = None, quick_gelu: bool | None = None
) -> ResolvedWeights:
    """Turn the user's (`--backbone`, `--weights`) into a checkpoint file on disk."""
    if model_name.startswith("hf-hub:"):
        repo_id = model_name.removeprefix("hf-hub:")
        what = f"CLIP backbone {model_name}"
        folder = Path(_hub_file(repo_id, ("open_clip_config.json",), cache_dir, what)).parent
        _hub_file(repo_id, HUB_CHECKPOINT_NAMES, cache_dir, what)  # open_clip finds it beside the config
        return ResolvedWeights(f"local-dir:{folder}", None, model_name, bool(quick_gelu))
    if model_name.startswith("local-dir:"):
        folder = Path(model_name.removeprefix("local-dir:"))
        if not (folder / "open_clip_config.json").is_file():
            raise WeightsNotFoundError(f"{folder}: no open_clip_config.json; a local-dir backbone needs one")
        return ResolvedWeights(model_name, None, str(folder), bool(quick_gelu))

    if model_name.replace("/", "-") not in open_clip.list_models():
        raise WeightsNotFoundError(
            f"Unknown CLIP architecture '{model_name}'. Use an open_clip name such as ViT-L-14-336 or "
            f"ViT-B-16 (see open_clip.list_models()), 'hf-hub:ORG/REPO', or 'local-dir:/path'."
        )
    openai_tag = open_clip.get_pretrained_cfg(model_name, "openai")
    if weights in (None, "", NO_WEIGHTS):
        return ResolvedWeights(model_name, None, NO_WEIGHTS, bool(quick_gelu))
    path = Path(weights).expanduser()
    if path.is_dir():
        found = [path / n for n in CHECKPOINT_NAMES if (path / n).is_file()]
        if not found:
            raise WeightsNotFoundError(f"{path}: no CLIP checkpoint inside (looked for {', '.join(CHECKPOINT_NAMES)})")
        path = found[0]
    if path.is_file():
        # A local file is almost always the OpenAI release for OpenAI architectures.
        default_gelu = bool(openai_tag.get("quick_gelu", False)) if openai_tag else False
        return ResolvedWeights(model_name, str(path), str(path), default_gelu if quick_gelu is None else quick_gelu)
    tag_cfg = open_clip.get_pretrained_cfg(model_name, weights)
    if not tag_cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model_name)) or "none"
        raise WeightsNotFoundError(
            f"--weights '{weights}' is neither a file nor a pretrained tag of {model_name} (tags: {tags})."
        )
    hub = tag_cfg.get("hf_hub", "")
    if not hub:
        raise WeightsNotFoundError(
            f"{model_name}/{weights} has no hub copy; download it from {tag_cfg.get('url')} and pass --weights FILE"
        )
    repo_id, filename = os.path.split(hub)
    what = f"CLIP weights {model_name} (pretrained '{weights}')"
    checkpoint = _hub_file(repo_id, (filename,) if filename else HUB_CHECKPOINT_NAMES, cache_dir, what)
    gelu = bool(tag_cfg.get("quick_gelu", False)) if quick_gelu is None else quick_gelu
    return ResolvedWeights(model_name, checkpoint, f"{model_name}/{weights}", gelu)
