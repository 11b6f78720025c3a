"""Reference banks as state (what a product profile stores) and leave-one-out scores of the references."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from anomaly_vlm.errors import AnomalyVLMError, CheckpointError
from anomaly_vlm.localizer import ReferenceConfig, ReferenceScorer, build_feature_source

from .synthetic import assert_same_scorer, textured_image

SIZE = 64
SOURCE = build_feature_source("builtin", image_size=SIZE, grid_size=16)
CONFIG = ReferenceConfig(neighbourhoods=(1, 3), augmentations=("hflip",))


def _part(seed: int, blemish: bool = False) -> Image.Image:
    array = textured_image(np.random.default_rng(seed), SIZE)
    if blemish:
        array[20:32, 30:42] = (230, 60, 40)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def _fit(references: list[Image.Image]) -> ReferenceScorer:
    return ReferenceScorer(SOURCE, CONFIG, progress=False).fit(references)


@pytest.fixture(scope="module")
def references() -> list[Image.Image]:
    return [_part(seed) for seed in range(4)] + [_part(4, blemish=True)]


@pytest.fixture(scope="module")
def fitted(references) -> ReferenceScorer:
    return _fit(references)


def test_state_round_trip_scores_identically(fitted):
    tensors, meta = fitted.state()
    meta = json.loads(json.dumps(meta))
    assert meta["num_references"] == 5 and meta["references_digest"] == fitted.references_digest
    restored = ReferenceScorer.from_state(SOURCE, {k: v.clone() for k, v in tensors.items()}, meta, progress=False)
    assert_same_scorer(restored, fitted, [_part(10), _part(11, blemish=True)])


def test_state_of_a_single_reference_round_trips():
    scorer = _fit([_part(0)])
    tensors, meta = scorer.state()
    restored = ReferenceScorer.from_state(SOURCE, tensors, meta, progress=False)
    np.testing.assert_array_equal(restored.score([_part(1)]).image_score, scorer.score([_part(1)]).image_score)


def test_from_state_refuses_another_feature_grid(fitted):
    tensors, meta = fitted.state()
    with pytest.raises(CheckpointError, match="feature_grid: bank 16, now 8"):
        ReferenceScorer.from_state(build_feature_source("builtin", image_size=SIZE, grid_size=8), tensors, meta)


def test_from_state_refuses_inconsistent_tensors(fitted):
    tensors, meta = fitted.state()
    with pytest.raises(CheckpointError, match="malformed"):
        ReferenceScorer.from_state(SOURCE, {k: v for k, v in tensors.items() if k != "banks.1.owner"}, meta)
    with pytest.raises(CheckpointError, match="malformed"):
        ReferenceScorer.from_state(SOURCE, tensors, {**meta, "num_references": 4})


def test_leave_one_out_is_above_self_scores_and_ranks_the_outlier_first(fitted, references):
    held_out = fitted.leave_one_out()
    assert held_out.anomaly_map.shape == (5, SIZE, SIZE) and held_out.image_score.shape == (5,)
    seen = fitted.score(references)
    assert (held_out.image_score >= seen.image_score).all()
    assert (held_out.scores["reference_map_max_z"] > seen.scores["reference_map_max_z"]).all()
    assert held_out.scores["reference_map_max_z"].argmax() == 4


def test_leave_one_out_equals_scoring_against_a_bank_stripped_of_that_reference(fitted, references):
    """The held-out score of reference j is what score() gives it once j's patches and distances are gone."""
    tensors, meta = fitted.state()
    held_out = fitted.leave_one_out()
    count, patches = len(references), 16 * 16
    for j in range(count):
        stripped = dict(tensors)
        for i in range(len(CONFIG.neighbourhoods)):
            keep = tensors[f"banks.{i}.owner"] != j
            stripped[f"banks.{i}.patches"] = tensors[f"banks.{i}.patches"][keep]
            stripped[f"banks.{i}.owner"] = tensors[f"banks.{i}.owner"][keep]
            normal = tensors[f"banks.{i}.normal"].view(count, patches)
            stripped[f"banks.{i}.normal"] = torch.cat([normal[:j], normal[j + 1 :]]).flatten()
        without = ReferenceScorer.from_state(SOURCE, stripped, {**meta, "num_references": count - 1}, progress=False)
        alone = without.score([references[j]])
        np.testing.assert_allclose(alone.anomaly_map[0], held_out.anomaly_map[j], atol=1e-4)
        np.testing.assert_allclose(alone.scores["reference_map_max_z"][0], held_out.scores["reference_map_max_z"][j], rtol=1e-3)


def test_leave_one_out_needs_two_references():
    with pytest.raises(AnomalyVLMError, match="at least 2 references"):
        _fit([_part(0)]).leave_one_out()


def test_references_digest_follows_the_pixels():
    images = [_part(0), _part(1)]
    changed = np.asarray(images[1]).copy()
    changed[5, 7, 0] ^= 1
    first, second = _fit(images), _fit([images[0], Image.fromarray(changed)])
    assert first.references_digest == _fit([_part(0), _part(1)]).references_digest
    assert first.references_digest != second.references_digest
    assert len(first.references_digest) == 64 and first.describe()["references_digest"] == first.references_digest


def test_the_bank_keeps_its_coreset_share_and_still_finds_the_blemish(references):
    whole = ReferenceScorer(SOURCE, ReferenceConfig(neighbourhoods=(1, 3), coreset_ratio=1.0), progress=False)
    tenth = ReferenceScorer(SOURCE, ReferenceConfig(neighbourhoods=(1, 3), coreset_ratio=0.1), progress=False)
    clean = references[:4]
    whole.fit(clean), tenth.fit(clean)
    patches = 4 * 4 * 16 * 16  # references x (original + 3 augmentations) x grid
    assert [len(b.patches) for b in whole.banks] == [patches] * 2
    assert [len(b.patches) for b in tenth.banks] == [int(np.ceil(0.1 * patches))] * 2
    scores = tenth.score([_part(20), _part(21, blemish=True)]).image_score
    assert scores[1] > scores[0]
    with pytest.raises(ValueError, match="coreset_ratio"):
        ReferenceScorer(SOURCE, ReferenceConfig(coreset_ratio=0.0))


def test_a_bank_fitted_before_gain_normalization_still_scores_as_it_was_fitted():
    """Banks from before the option carry no `feature_gain`: the source they describe keeps the gain off."""
    from anomaly_vlm.localizer import BuiltinFeatures

    old_source = build_feature_source("builtin", image_size=SIZE, grid_size=16, gain=False)
    old = ReferenceScorer(old_source, CONFIG, progress=False).fit([_part(seed) for seed in range(3)])
    tensors, meta = old.state()
    assert "feature_gain" not in meta["source"]
    rebuilt = BuiltinFeatures.described(meta["source"])
    assert rebuilt.config.gain is False
    restored = ReferenceScorer.from_state(rebuilt, tensors, meta, progress=False)
    np.testing.assert_array_equal(restored.score([_part(7)]).image_score, old.score([_part(7)]).image_score)
    with pytest.raises(CheckpointError, match="feature_gain: bank None, now True"):
        ReferenceScorer.from_state(build_feature_source("builtin", image_size=SIZE, grid_size=16), tensors, meta)
