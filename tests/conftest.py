from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from anomaly_vlm.clip import TINY_MODEL, BackboneConfig, load_backbone
from anomaly_vlm.synth.export import save_dataset
from anomaly_vlm.synth.recipe import load_recipe
from anomaly_vlm.synth.runner import synthesize

from .synthetic import make_category

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RECIPES = Path(__file__).resolve().parents[1] / "data_recipes"


@pytest.fixture(scope="session")
def tiny_backbone():
    torch.manual_seed(0)
    return load_backbone(BackboneConfig(name=TINY_MODEL, weights="none", image_size=64, device="cpu"))


@pytest.fixture(scope="session")
def dataset_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mvtec")
    make_category(root, "widget", seed=0)
    make_category(root, "gadget", seed=1, masks=False)
    return root


@pytest.fixture(scope="session")
def conversations(tmp_path_factory):
    """A small synthesized set on drawn parts, as `synth` writes it."""
    out = tmp_path_factory.mktemp("synth")
    recipe = load_recipe(RECIPES / "procedural.yaml", num=6, seed=2)
    recipe.source.image_size = 64
    records = synthesize(recipe, out, progress=False).records
    save_dataset(out, records)
    return out
