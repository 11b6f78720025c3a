"""Self scoring of single images: synthetic parts with one painted blemish."""

import numpy as np
import pytest
from PIL import Image

from anomaly_vlm.errors import AnomalyVLMError
from anomaly_vlm.localizer import BuiltinFeatureConfig, BuiltinFeatures
from anomaly_vlm.localizer.self_similarity import SelfConfig, SelfScorer

from .synthetic import textured_image

SIZE = 96
FEATURES = BuiltinFeatures(BuiltinFeatureConfig(image_size=SIZE, grid_size=24))
SIDE = 12


def _part(seed: int, corner: tuple[int, int] | None = None) -> Image.Image:
    array = textured_image(np.random.default_rng(seed), SIZE)
    if corner:
        y, x = corner
        array[y : y + SIDE, x : x + SIDE] = (230, 60, 40)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def _scorer(**settings) -> SelfScorer:
    return SelfScorer(FEATURES, SelfConfig(**settings), progress=False)


def _assert_found(anomaly_map: np.ndarray, corner: tuple[int, int]) -> None:
    """The map peaks on the blemish, and the blemish scores above nearly all pixels away from it."""
    y, x = corner
    peak = np.unravel_index(anomaly_map.argmax(), anomaly_map.shape)
    assert y - 2 <= peak[0] < y + SIDE + 2 and x - 2 <= peak[1] < x + SIDE + 2
    away = np.ones_like(anomaly_map, dtype=bool)
    away[max(0, y - 8) : y + SIDE + 8, max(0, x - 8) : x + SIDE + 8] = False
    assert anomaly_map[y : y + SIDE, x : x + SIDE].mean() > np.quantile(anomaly_map[away], 0.99)


@pytest.mark.parametrize("corner", [(20, 60), (42, 42)], ids=["off-axis", "on-both-axes"])
def test_a_blemish_scores_above_the_rest_of_its_image(corner):
    image = _part(0, corner)
    prediction = _scorer(augmentations=("hflip", "vflip", "rot90")).score([image])
    _assert_found(prediction.anomaly_map[0], corner)
    # Every copy holds the blemish too (on both axes, at its own place): the window carried
    # onto the copies must keep it from matching itself there, so copies barely lower its score.
    alone = _scorer(augmentations=()).score([image])
    assert prediction.scores["self_map_max_z"][0] > 0.8 * alone.scores["self_map_max_z"][0]


def test_a_blemished_image_scores_above_the_same_part_clean():
    prediction = _scorer().score([_part(3), _part(3, (50, 20))])
    assert prediction.image_score[1] > prediction.image_score[0]
    assert prediction.scores["self_map_max_z"][1] > prediction.scores["self_map_max_z"][0]


def test_prediction_shapes_and_ranges():
    prediction = _scorer(augmentations=("hflip", "vflip")).score([_part(1), _part(2, (10, 70))], "widget")
    assert prediction.anomaly_map.shape == (2, SIZE, SIZE) and prediction.anomaly_map.dtype == np.float32
    assert prediction.image_score.shape == (2,) and prediction.modes == ("self",)
    for values in (prediction.anomaly_map, prediction.image_score, prediction.scores["self_map_max_z"]):
        assert np.isfinite(values).all()
    assert 0 <= prediction.anomaly_map.min() and prediction.anomaly_map.max() <= 1
    assert 0 <= prediction.image_score.min() and prediction.image_score.max() <= 1


def test_a_batch_is_scored_as_its_images_one_by_one():
    images = [_part(4, (30, 30)), _part(5)]
    scorer = _scorer(batch_size=2)
    together = scorer.score(images)
    alone = [scorer.score([image]) for image in images]
    np.testing.assert_allclose(together.anomaly_map, np.concatenate([p.anomaly_map for p in alone]), atol=1e-5)
    np.testing.assert_allclose(together.image_score, np.concatenate([p.image_score for p in alone]), atol=1e-5)


def test_describe_names_the_mode_and_its_settings():
    described = _scorer(radius=1).describe()
    assert described["mode"] == "self" and described["features"] == "builtin"
    assert described["radius"] == 1 and described["neighbourhoods"] == [3, 5, 7]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown augmentations"):
        _scorer(augmentations=("shear",))
    with pytest.raises(ValueError, match="radius"):
        _scorer(radius=-1)
    with pytest.raises(AnomalyVLMError, match="nothing"):
        _scorer(radius=30, augmentations=()).score([_part(0)])
    with pytest.raises(AnomalyVLMError, match="at least one image"):
        _scorer().score([])
