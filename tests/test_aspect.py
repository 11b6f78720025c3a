"""Tall and wide parts keep their aspect ratio in every mode: working sizes, square tiles for CLIP, maps that fit."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from anomaly_vlm.localizer import (
    BuiltinFeatureConfig,
    BuiltinFeatures,
    MutualConfig,
    MutualScorer,
    ReferenceConfig,
    ReferenceScorer,
    ScorerOptions,
    build_feature_source,
    build_scorer,
)
from anomaly_vlm.localizer.model import Localizer
from anomaly_vlm.localizer.prompt_learner import PromptEnsemble
from anomaly_vlm.localizer.self_similarity import SelfConfig, SelfScorer
from anomaly_vlm.localizer.tiling import MAX_ASPECT, stitch, tile_starts, tiles, working_size

from .synthetic import textured_image

WIDTH, HEIGHT = 64, 160  # a KolektorSDD-like strip, 2.5 times taller than wide


def _strip(seed: int, crack_row: int | None = None) -> Image.Image:
    rng = np.random.default_rng(seed)
    array = np.concatenate([textured_image(rng, WIDTH) for _ in range(3)])[:HEIGHT]
    if crack_row is not None:
        array[crack_row : crack_row + 2, 16:48] = 20  # a thin dark crack, 2 px across
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def _top_centre(anomaly_map: np.ndarray) -> np.ndarray:
    """Centre of the pixels within 10 % of the map's peak (maps saturate over a defect)."""
    return np.argwhere(anomaly_map >= 0.9 * anomaly_map.max()).mean(axis=0)


def test_working_size_keeps_the_median_aspect_on_the_stride_grid():
    tall = [Image.new("RGB", (500, 1260))] * 2 + [Image.new("RGB", (500, 500))]
    assert working_size(tall, 256, 8) == (648, 256)  # 256 x 2.52, on the 8 px grid
    assert working_size([Image.new("RGB", (1260, 500))], 256, 8) == (256, 648)
    assert working_size(tall, 256, 8, keep_aspect=False) == (256, 256)
    assert working_size([Image.new("RGB", (100, 2000))], 64, 8) == (int(64 * MAX_ASPECT), 64)


@pytest.mark.parametrize("length,tile,stride", [(640, 256, 16), (160, 64, 8), (64, 64, 8), (100, 64, 4)])
def test_tiles_cover_the_image_with_overlap(length, tile, stride):
    starts = tile_starts(length, tile, stride)
    assert starts[0] == 0 and starts[-1] + tile >= length and all(s % stride == 0 for s in starts)
    assert all(b - a <= 0.75 * tile + stride for a, b in zip(starts, starts[1:]))
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all()


def test_stitch_averages_where_tiles_overlap():
    corners = tiles((8, 4), 4, 1)
    assert corners == [(0, 0), (2, 0), (4, 0)]
    parts = [torch.full((1, 1, 4, 4), float(v)) for v in (0, 3, 6)]
    canvas = stitch(parts, corners, (8, 4))[0, 0, :, 0]
    assert canvas.tolist() == [0, 0, 1.5, 1.5, 4.5, 4.5, 6, 6]


def test_builtin_reference_scoring_of_a_tall_part_finds_a_thin_crack():
    source = BuiltinFeatures(BuiltinFeatureConfig(image_size=WIDTH, grid_size=16))
    scorer = ReferenceScorer(source, ReferenceConfig(), progress=False).fit([_strip(s) for s in range(4)])
    assert scorer.size == (HEIGHT, WIDTH) and scorer.grid == (40, 16)
    assert scorer.describe()["working_size"] == [HEIGHT, WIDTH]
    assert "rot90" not in scorer.describe()["augmentations"]  # a quarter turn would change the strip's shape
    prediction = scorer.score([_strip(10, crack_row=120), _strip(11)])
    assert prediction.anomaly_map.shape == (2, HEIGHT, WIDTH)
    centre = _top_centre(prediction.anomaly_map[0])
    assert abs(centre[0] - 121) <= 6 and 16 <= centre[1] <= 48
    assert prediction.image_score[0] > prediction.image_score[1]
    squashed = ReferenceScorer(BuiltinFeatures(BuiltinFeatureConfig(image_size=WIDTH, grid_size=16, keep_aspect=False)),
                               ReferenceConfig(), progress=False).fit([_strip(s) for s in range(4)])
    assert squashed.score([_strip(10, crack_row=120)]).anomaly_map.shape == (1, WIDTH, WIDTH)


def test_reference_state_keeps_the_working_size():
    source = BuiltinFeatures(BuiltinFeatureConfig(image_size=WIDTH, grid_size=16))
    scorer = ReferenceScorer(source, ReferenceConfig(), progress=False).fit([_strip(s) for s in range(3)])
    restored = ReferenceScorer.from_state(source, *scorer.state(), progress=False)
    assert restored.size == (HEIGHT, WIDTH)
    image = [_strip(9, crack_row=40)]
    np.testing.assert_allclose(restored.score(image).anomaly_map, scorer.score(image).anomaly_map, atol=1e-6)


def test_mutual_and_self_scoring_keep_the_aspect():
    source = BuiltinFeatures(BuiltinFeatureConfig(image_size=WIDTH, grid_size=16))
    images = [_strip(0, crack_row=30)] + [_strip(s) for s in range(1, 6)]
    mutual = MutualScorer(source, MutualConfig(), progress=False).score(images)
    assert mutual.anomaly_map.shape == (6, HEIGHT, WIDTH) and mutual.image_score.argmax() == 0
    alone = SelfScorer(source, SelfConfig(), progress=False).score(images[:1])
    assert alone.anomaly_map.shape == (1, HEIGHT, WIDTH)
    assert abs(_top_centre(alone.anomaly_map[0])[0] - 31) <= 8


def test_clip_features_read_square_tiles_stitched_on_the_patch_grid(tiny_backbone):
    source = build_feature_source("clip", backbone=tiny_backbone)
    side, patch = tiny_backbone.image_size, tiny_backbone.patch_size
    size = source.working_size([_strip(0)])
    assert size[1] == side and size[0] % patch == 0 and size[0] > side
    tensor = source.preprocess(_strip(0), size).unsqueeze(0)
    features = source.extract(tensor)
    assert features.shape[2:] == (size[0] // patch, side // patch)
    corners = tiles(size, side, patch)
    first = source.extract(tensor[..., :side, :side])
    overlap = corners[1][0] // patch  # rows before the second tile are the first tile's alone
    torch.testing.assert_close(features[:, :, :overlap], first[:, :, :overlap])


def test_prompt_localizer_scores_a_tall_image_by_tiles(tiny_backbone):
    localizer = Localizer(tiny_backbone, PromptEnsemble()).eval()
    prediction = localizer.score([_strip(0), _strip(1)])
    height = working_size([_strip(0)], tiny_backbone.image_size, tiny_backbone.patch_size)[0]
    assert prediction.anomaly_map.shape == (2, height, tiny_backbone.image_size)
    assert np.isfinite(prediction.image_score).all() and localizer.describe()["keep_aspect"] is True
    square = build_scorer(ScorerOptions(mode="ensemble", keep_aspect=False, backbone=_tiny(tiny_backbone),
                                        progress=False)).scorer
    assert square.score([_strip(0)]).anomaly_map.shape == (1, tiny_backbone.image_size, tiny_backbone.image_size)


def _tiny(backbone) -> dict:
    return {"name": backbone.name, "weights": "none", "image_size": backbone.image_size, "device": "cpu"}


def test_score_records_the_resolution_it_worked_at(tmp_path):
    from anomaly_vlm.cli import main

    folder = tmp_path / "strips"
    folder.mkdir()
    for seed in range(4):
        _strip(seed, crack_row=80 if seed == 0 else None).save(folder / f"strip_{seed}.png")
    assert main(["score", str(folder), "--out", str(tmp_path / "out"), "--mode", "mutual", "--features", "builtin"]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {tuple(r["map_size"]) for r in results["images"]} == {(256, 640)}  # built-in features: 256 px across
    assert results["models"]["keep_aspect"] is True
    finer = ["--builtin-size", "128", "--builtin-grid", "32"]
    assert main(["score", str(folder), "--out", str(tmp_path / "fine"), "--mode", "mutual", "--features", "builtin",
                 *finer]) == 0
    results = json.loads((tmp_path / "fine" / "results.json").read_text())
    assert {tuple(r["map_size"]) for r in results["images"]} == {(128, 320)}  # 4 px patches on 128 px across
    assert results["models"]["feature_image_size"] == 128 and results["models"]["feature_grid"] == 32
