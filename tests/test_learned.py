"""Learning a product from its good images: training, determinism, resume, save/load, detection."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from anomaly_vlm.localizer.learned import CHECKPOINT_DIR, learn_product
from anomaly_vlm.localizer.learned_config import TEXTURE_MIX, LearnConfig
from anomaly_vlm.localizer.learned_scorer import CONFIG_FILE, WEIGHTS_FILE, LearnedScorer, weights_digest
from anomaly_vlm.localizer.scorer import AnomalyScorer
from anomaly_vlm.localizer.simulated_defects import STRIDE, to_array, to_tensor
from anomaly_vlm.localizer.tiling import working_size
from anomaly_vlm.synth.simulators import SimulationContext, simulate
from anomaly_vlm.synth.textures import ProceduralTextures, procedural_normal
from anomaly_vlm.training_state import STATE_JSON


def _surface(count: int = 8, size: int = 72, seed: int = 0) -> list[Image.Image]:
    """One product: crops of a single procedural surface with a little sensor noise, slightly tall."""
    rng = np.random.default_rng(seed)
    big = procedural_normal(np.random.default_rng(3), 192, "texture").astype(np.float32)
    images = []
    for _ in range(count):
        top, left = rng.integers(0, 192 - size - 16, size=2)
        crop = big[top : top + size + 16, left : left + size] + rng.normal(0, 2.0, (size + 16, size, 3))
        images.append(Image.fromarray(np.clip(crop + 0.5, 0, 255).astype(np.uint8)))
    return images


CONFIG = dict(
    image_size=64, crop=48, steps=150, batch_size=6, lr=5e-3, seed=7, width=6, levels=3, content="texture",
    holdout=2, checkpoint_every=10, validation_per_image=2, threads=1,
)


def _config(**changes) -> LearnConfig:
    return LearnConfig(**{**CONFIG, "simulators": dict(TEXTURE_MIX), **changes})


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    return _surface()


@pytest.fixture(scope="module")
def learned(images, tmp_path_factory):
    torch.set_num_threads(1)
    losses: list[float] = []
    out = tmp_path_factory.mktemp("learned")
    scorer = learn_product(images, out, _config(), progress=False, callback=lambda step, loss: losses.append(loss))
    return scorer, out, losses


def test_learns_and_saves(learned):
    scorer, out, losses = learned
    assert len(losses) == CONFIG["steps"]
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    assert (out / WEIGHTS_FILE).is_file() and (out / CONFIG_FILE).is_file()
    record = json.loads((out / CONFIG_FILE).read_text())
    assert record["format"] == 1 and record["config"]["seed"] == 7
    assert len(record["holdout_scores"]) == 2 == len(scorer.holdout_scores)
    assert record["working_size"] == [80, 64]  # 88 x 72 images: shorter side 64, aspect kept
    typed: AnomalyScorer = scorer  # the protocol is structural: mode, score, describe
    assert typed.mode == "learned" and callable(typed.score) and callable(typed.describe)
    described = scorer.describe()
    assert described["working_size"] == [80, 64] and len(described["weights_sha256"]) == 64


def test_working_size_keeps_aspect():
    tall = [Image.new("RGB", (500, 1250))]
    wide = [Image.new("RGB", (900, 600))]
    assert working_size(tall, 256, STRIDE) == (640, 256)
    assert working_size(wide, 256, STRIDE) == (256, 384)


def test_same_seed_same_weights(images, learned, tmp_path):
    again = learn_product(images, tmp_path, _config(), progress=False)
    assert weights_digest(again.model) == weights_digest(learned[0].model)
    other = learn_product(images, tmp_path / "other", _config(seed=8, steps=10), progress=False)
    assert weights_digest(other.model) != weights_digest(learned[0].model)


def test_killed_run_resumes_to_the_same_weights(images, learned, tmp_path):
    class Killed(Exception):
        pass

    def kill(step: int, loss: float) -> None:
        if step == 56:  # after step 57 of 150; the last checkpoint holds 50 steps
            raise Killed

    with pytest.raises(Killed):
        learn_product(images, tmp_path, _config(), progress=False, callback=kill)
    assert json.loads((tmp_path / CHECKPOINT_DIR / STATE_JSON).read_text())["step"] == 50
    assert not (tmp_path / WEIGHTS_FILE).exists()
    steps: list[int] = []
    resumed = learn_product(images, tmp_path, _config(), progress=False, callback=lambda step, loss: steps.append(step))
    assert steps[0] == 50 and steps[-1] == CONFIG["steps"] - 1
    assert weights_digest(resumed.model) == weights_digest(learned[0].model)


def test_an_ensemble_averages_its_members_and_resumes_each(images, learned, tmp_path):
    from anomaly_vlm.localizer.learned_scorer import LearnedEnsemble

    class Killed(Exception):
        pass

    calls: list[int] = []

    def kill(step: int, loss: float) -> None:
        calls.append(step)
        if len(calls) == CONFIG["steps"] + 25:  # member 1 killed after 25 steps; its checkpoint holds 20
            raise Killed

    config = _config(members=2)
    with pytest.raises(Killed):
        learn_product(images, tmp_path, config, progress=False, callback=kill)
    assert json.loads((tmp_path / f"{CHECKPOINT_DIR}-1" / STATE_JSON).read_text())["step"] == 20
    steps: list[int] = []
    ensemble = learn_product(images, tmp_path, config, progress=False, callback=lambda step, loss: steps.append(step))
    assert steps[0] == 20 and len(steps) == CONFIG["steps"] - 20  # member 0 was done; member 1 went on from 20
    assert isinstance(ensemble.model, LearnedEnsemble) and len(ensemble.model.members) == 2
    # member 0 is the single model of the same seed; member 1 is another network
    assert weights_digest(ensemble.model.members[0]) == weights_digest(learned[0].model)
    assert weights_digest(ensemble.model.members[1]) != weights_digest(learned[0].model)
    tensors = to_tensor([to_array(image, ensemble.size) for image in images[:2]])
    with torch.no_grad():
        mean = torch.stack([torch.sigmoid(m(tensors)) for m in ensemble.model.members]).mean(dim=0)[:, 0]
    np.testing.assert_allclose(ensemble.predict_maps(tensors), mean.numpy(), atol=1e-5)
    loaded = LearnedScorer.load(tmp_path)
    np.testing.assert_array_equal(loaded.score(images[:2]).anomaly_map, ensemble.score(images[:2]).anomaly_map)
    assert loaded.describe()["members"] == 2 and loaded.describe() == ensemble.describe()


def test_other_config_does_not_resume(images, tmp_path):
    learn_product(images, tmp_path, _config(steps=10), progress=False)
    steps: list[int] = []
    learn_product(images, tmp_path, _config(steps=10, lr=1e-3), progress=False, callback=lambda s, _: steps.append(s))
    assert steps[0] == 0


def test_save_load_round_trip(images, learned):
    scorer, out, _ = learned
    loaded = LearnedScorer.load(out)
    first, second = scorer.score(images[:3]), loaded.score(images[:3])
    np.testing.assert_array_equal(first.anomaly_map, second.anomaly_map)
    np.testing.assert_array_equal(first.image_score, second.image_score)
    np.testing.assert_array_equal(loaded.holdout_scores, scorer.holdout_scores)
    assert loaded.describe() == scorer.describe()
    assert first.anomaly_map.shape == (3, 80, 64) and first.modes == ("learned",)
    assert first.anomaly_map.min() >= 0 and first.anomaly_map.max() <= 1


def test_synthetic_defect_scores_above_clean(learned):
    scorer, _, _ = learned
    clean = _surface(count=6, seed=11)
    defective = []
    rng = np.random.default_rng(5)
    for image in clean:
        array = np.asarray(image.convert("RGB").resize((64, 80)))
        context = SimulationContext(rng, np.ones(array.shape[:2], bool), ProceduralTextures())
        defective.append(Image.fromarray(simulate("missing", array, context).image))
    clean_scores = scorer.score(clean).image_score
    defect_scores = scorer.score(defective).image_score
    assert np.median(defect_scores) > clean_scores.max()


def test_the_default_mix_is_the_contents_recipe_and_a_product_recipe_replaces_it():
    from anomaly_vlm.localizer.learned_config import OBJECT_MIX, with_recipe
    from anomaly_vlm.synth.recipe import load_recipe

    from .conftest import RECIPES

    assert LearnConfig().simulators == OBJECT_MIX and LearnConfig(content="texture").simulators == TEXTURE_MIX
    recipe = load_recipe(RECIPES / "textures.yaml", source_path=".")
    assert with_recipe(LearnConfig(), recipe).simulators == TEXTURE_MIX
    assert with_recipe(LearnConfig(), recipe).content == "texture"
