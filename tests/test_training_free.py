"""Mutual, reference and fused scoring on synthetic parts with planted defects."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from anomaly_vlm.cli import main
from anomaly_vlm.errors import AnomalyVLMError, WeightsNotFoundError
from anomaly_vlm.localizer import (
    FEATURE_SOURCES,
    BuiltinFeatureConfig,
    BuiltinFeatures,
    FusedScorer,
    ModeScale,
    MutualConfig,
    MutualScorer,
    Prediction,
    ReferenceConfig,
    ReferenceScorer,
    ScorerOptions,
    build_feature_source,
    build_scorer,
    fuse,
)
from anomaly_vlm.localizer import neighbours

from .synthetic import textured_image

SIZE = 96
FEATURES = BuiltinFeatures(BuiltinFeatureConfig(image_size=SIZE, grid_size=24))


def _part(seed: int, defect: tuple[int, int] | None = None) -> Image.Image:
    array = textured_image(np.random.default_rng(seed), SIZE)
    if defect:
        y, x = defect
        array[y : y + 12, x : x + 12] = (230, 60, 40)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def _finds(anomaly_map: np.ndarray, corner: tuple[int, int], side: int = 12) -> bool:
    """The defect pixels score at the top, and the top-scoring region is centred on the defect."""
    y, x = corner
    top = anomaly_map >= 0.9 * anomaly_map.max()
    centre = np.argwhere(top).mean(axis=0)
    inside = anomaly_map[y : y + side, x : x + side]
    return bool(inside.min() >= 0.9 * anomaly_map.max() and y <= centre[0] < y + side and x <= centre[1] < x + side)


def test_mutual_scoring_puts_a_planted_defect_on_top():
    corner = (50, 20)
    images = [_part(0, corner)] + [_part(seed) for seed in range(1, 7)]
    prediction = MutualScorer(FEATURES, MutualConfig(neighbourhoods=(1, 3)), progress=False).score(images)
    assert prediction.anomaly_map.shape == (7, SIZE, SIZE) and prediction.modes == ("mutual",)
    assert 0 <= prediction.anomaly_map.min() and prediction.anomaly_map.max() <= 1
    assert _finds(prediction.anomaly_map[0], corner)
    assert prediction.image_score.argmax() == 0
    assert prediction.anomaly_map[0].max() > prediction.anomaly_map[1:].max()


def test_mutual_scoring_refuses_too_few_images():
    with pytest.raises(AnomalyVLMError, match="at least 3"):
        MutualScorer(FEATURES, progress=False).score([_part(0), _part(1)], "widget")


@pytest.mark.parametrize("augmentations", [(), ("hflip", "rot90")])
def test_reference_scoring_finds_the_defect_and_ranks_it_first(augmentations):
    corner = (20, 60)
    references = [_part(seed) for seed in range(10, 13)]
    scorer = ReferenceScorer(FEATURES, ReferenceConfig(neighbourhoods=(1, 3), augmentations=augmentations), progress=False)
    prediction = scorer.fit(references).score([_part(1), _part(2, corner), _part(3)])
    assert _finds(prediction.anomaly_map[1], corner)
    assert prediction.image_score.argmax() == 1
    assert scorer.describe()["references"] == 3


def test_reference_coreset_keeps_the_bank_bounded():
    scorer = ReferenceScorer(FEATURES, ReferenceConfig(neighbourhoods=(1,), augmentations=(), max_bank=100), progress=False)
    scorer.fit([_part(seed) for seed in range(3)])
    assert len(scorer.banks[0].patches) == 100
    assert len(scorer.banks[0].normal) == 3 * 24 * 24


def test_nearest_distances_match_brute_force_for_any_chunking():
    torch.manual_seed(0)
    query, others = torch.randn(50, 8), torch.randn(7, 30, 8)
    expected = torch.cdist(query, others.reshape(-1, 8)).view(50, 7, 30).amin(dim=2)
    for chunk in (1, 3, 7, 100):
        assert torch.allclose(neighbours.nearest_distance_per_image(query, others, chunk), expected, atol=1e-4)
        assert torch.allclose(neighbours.nearest_distance(query, others.reshape(-1, 8), chunk * 10), expected.amin(1), atol=1e-4)


def test_mutual_memory_is_bounded_by_the_chunk_not_the_batch(monkeypatch):
    """The largest distance block is query patches x chunk_images x patches, whatever the batch size."""
    largest = []
    addmm = torch.addmm

    def recording_addmm(*args, **kwargs):
        out = addmm(*args, **kwargs)
        largest[-1] = max(largest[-1], out.numel())
        return out

    monkeypatch.setattr(neighbours.torch, "addmm", recording_addmm)
    config = MutualConfig(neighbourhoods=(1,), chunk_images=2, rescore_neighbours=0)
    for count in (4, 12):
        largest.append(0)
        MutualScorer(FEATURES, config, progress=False).score([_part(seed) for seed in range(count)])
    patches = 24 * 24
    assert largest == [patches * 2 * patches] * 2


def test_coreset_covers_separate_clusters():
    bank = torch.cat([torch.zeros(50, 4), torch.full((5, 4), 10.0)])
    chosen = neighbours.greedy_coreset(bank, 2, oversample=100)
    assert {int(i) >= 50 for i in chosen} == {True, False}


def test_a_large_bank_is_cut_to_a_seeded_pool_before_the_greedy_picks():
    bank = torch.randn(5000, 8, generator=torch.Generator().manual_seed(0))
    chosen = neighbours.greedy_coreset(bank, 50, oversample=4)
    assert len(chosen) == len(set(chosen.tolist())) == 50 and int(chosen.max()) < 5000
    assert torch.equal(chosen, neighbours.greedy_coreset(bank, 50, oversample=4))
    pool = torch.randperm(5000, generator=torch.Generator().manual_seed(0))[:200]
    assert set(chosen.tolist()) <= set(pool.tolist())


def test_fusion_of_one_map_is_that_map_and_weights_apply():
    rng = np.random.default_rng(0)
    a = Prediction(rng.random((2, 8, 8)).astype(np.float32), np.array([0.2, 0.8]), {}, ("mutual",))
    assert fuse({"mutual": a}) is a
    b = Prediction(rng.random((2, 16, 16)).astype(np.float32), np.array([0.6, 0.0]), {}, ("reference",))
    fused = fuse({"mutual": a, "reference": b}, {"mutual": 1.0, "reference": 3.0})
    assert fused.anomaly_map.shape == (2, 16, 16) and fused.modes == ("mutual", "reference")
    assert np.allclose(fused.image_score, (np.array([0.2, 0.8]) + 3 * np.array([0.6, 0.0])) / 4)
    assert np.allclose(fused.scores["reference_score"], b.image_score)
    with pytest.raises(ValueError, match="no fusion weight"):
        fuse({"mutual": a, "other": b}, {"mutual": 1.0})


def test_fusion_on_good_part_scales_lets_a_narrow_mode_rank_what_a_wide_one_cannot():
    """A mode whose good parts all score near 0 still decides when its values move; a plain mean loses it."""
    wide_map = np.full((3, 4, 4), 0.6, dtype=np.float32)
    narrow_map = np.full((3, 4, 4), 0.001, dtype=np.float32)
    narrow_map[1, 2, 2] = 0.2  # a defect only the narrow mode sees
    wide = Prediction(wide_map, np.array([0.61, 0.60, 0.62]), {}, ("reference",))
    narrow = Prediction(narrow_map, np.array([0.001, 0.2, 0.001]), {}, ("learned",))
    weights = {"reference": 1.0, "learned": 1.0}
    plain = fuse({"reference": wide, "learned": narrow}, weights)
    assert plain.image_score.argmax() == 1 and plain.image_score[1] - plain.image_score[2] < 0.1
    scales = {"reference": ModeScale.of(np.array([0.55, 0.6, 0.65, 0.7])),
              "learned": ModeScale.of(np.array([0.0008, 0.001, 0.0012]))}
    scaled = fuse({"reference": wide, "learned": narrow}, weights, scales)
    assert scaled.image_score[1] > 0.99 > 0.5 > scaled.image_score[0]
    assert scaled.anomaly_map[1].argmax() == 2 * 4 + 2 and scaled.anomaly_map.max() <= 1
    # the same transform on a mode's map and its score: a map at its score's value fuses to the fused score
    flat = fuse({"reference": Prediction(np.full((3, 4, 4), 0.6, np.float32), np.full(3, 0.6), {}, ("reference",)),
                 "learned": Prediction(np.full((3, 4, 4), 0.2, np.float32), np.full(3, 0.2), {}, ("learned",))}, weights, scales)
    np.testing.assert_allclose(flat.anomaly_map.max(axis=(1, 2)), flat.image_score, rtol=1e-5)
    # a scale for only some of the modes: the plain mean, as without scales
    np.testing.assert_allclose(fuse({"reference": wide, "learned": narrow}, weights, {"learned": scales["learned"]}).image_score,
                               plain.image_score)
    with pytest.raises(ValueError, match="positive spread from at least 2"):
        ModeScale(0.0, 1.0, 1)


def test_fused_scorer_leaves_out_mutual_for_a_single_image():
    references = [_part(seed) for seed in range(10, 12)]
    scorer = FusedScorer([MutualScorer(FEATURES, progress=False),
                          ReferenceScorer(FEATURES, ReferenceConfig(augmentations=()), progress=False).fit(references)])
    assert scorer.score([_part(1)]).modes == ("reference",)
    assert scorer.score([_part(s) for s in range(3)]).modes == ("mutual", "reference")


@pytest.mark.parametrize("name", sorted(FEATURE_SOURCES))
def test_every_feature_source_gives_finite_patch_grids(name, tiny_backbone):
    source = build_feature_source(name, backbone=tiny_backbone, image_size=64, grid_size=8)
    images = torch.stack([source.preprocess(_part(seed)) for seed in range(2)])
    features = source.extract(images)
    assert features.ndim == 4 and features.shape[0] == 2 and features.shape[2] == features.shape[3]
    assert torch.isfinite(features).all()
    assert source.describe()["features"] == name


def test_without_clip_weights_mutual_falls_back_to_builtin_features(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    options = ScorerOptions(backbone={"name": "ViT-B-16", "weights": "openai"}, progress=False)
    built = build_scorer(options)
    assert built.scorer.mode == "mutual" and built.scorer.describe()["features"] == "builtin"
    assert "built-in features" in built.notices[0] and "ViT-B-16" in built.notices[0]
    built = build_scorer(options, references=[_part(0), _part(1)])
    assert built.scorer.mode == "reference"
    with pytest.raises(WeightsNotFoundError):
        build_scorer(ScorerOptions(mode="ensemble", backbone=options.backbone))
    with pytest.raises(WeightsNotFoundError):
        build_scorer(ScorerOptions(mode="mutual", features="clip", backbone=options.backbone))


TINY = ["--backbone", "anomaly-vlm-tiny", "--weights", "none", "--image-size", "64", "--device", "cpu"]


def test_cli_training_free_modes_record_mode_and_features(tmp_path, dataset_root):
    widget = dataset_root / "widget"
    out = tmp_path / "mutual"
    assert main(["score", str(widget), "--out", str(out), "--mode", "mutual", "--features", "builtin"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["models"]["mode"] == "mutual" and results["models"]["features"] == "builtin"
    assert results["images"][0]["modes"] == ["mutual"]
    assert "image_auroc" in json.loads((out / "metrics.json").read_text())

    out = tmp_path / "fused"
    assert main(["score", str(widget), "--out", str(out), "--mode", "fused", "--features", "builtin",
                 "--references", str(widget / "train" / "good"), "--shots", "2", *TINY]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [p["mode"] for p in results["models"]["parts"]] == ["ensemble", "mutual", "reference"]
    assert results["models"]["parts"][2]["references"] == 2
    assert results["images"][0]["modes"] == ["ensemble", "mutual", "reference"]
    assert {"ensemble_score", "mutual_score", "reference_score"} <= set(results["images"][0])


def test_cli_reference_mode_needs_references(tmp_path, dataset_root, capsys):
    assert main(["score", str(dataset_root / "widget"), "--out", str(tmp_path), "--mode", "reference"]) == 2
    assert "--references" in capsys.readouterr().err


def _recorded_comparisons(monkeypatch, scorer, images):
    """Score `images`, recording for each image which others it was compared with (first neighbourhood size)."""
    seen = {}
    original = MutualScorer.distances

    def recording(self, patches, i, others):
        seen.setdefault(i, others.tolist())
        return original(self, patches, i, others)

    monkeypatch.setattr(MutualScorer, "distances", recording)
    prediction = scorer.score(images)
    monkeypatch.undo()
    return seen, prediction


def test_mutual_sampling_compares_each_image_with_exactly_k_others(monkeypatch):
    images = [_part(seed) for seed in range(9)]
    scorer = MutualScorer(FEATURES, MutualConfig(neighbourhoods=(1, 3), sample_size=3), progress=False)
    seen, _ = _recorded_comparisons(monkeypatch, scorer, images)
    assert sorted(seen) == list(range(9))
    for i, others in seen.items():
        assert len(others) == 3 == len(set(others)) and i not in others and all(0 <= j < 9 for j in others)
    assert len({tuple(others) for others in seen.values()}) > 1
    assert scorer.describe()["sample_size"] == 3 and scorer.describe()["seed"] == 0


def test_mutual_sampling_is_seeded_and_follows_content_not_order(monkeypatch):
    images = [_part(seed) for seed in range(9)]
    config = MutualConfig(neighbourhoods=(1,), sample_size=3, seed=5)
    first = MutualScorer(FEATURES, config, progress=False).score(images)
    again = MutualScorer(FEATURES, config, progress=False).score(images)
    assert np.array_equal(first.anomaly_map, again.anomaly_map) and np.array_equal(first.image_score, again.image_score)
    seen, _ = _recorded_comparisons(monkeypatch, MutualScorer(FEATURES, config, progress=False), images)
    other, _ = _recorded_comparisons(monkeypatch, MutualScorer(FEATURES, MutualConfig(neighbourhoods=(1,), sample_size=3, seed=6),
                                                               progress=False), images)
    assert seen != other
    order = [4, 0, 8, 2, 6, 1, 3, 7, 5]
    shuffled_seen, shuffled = _recorded_comparisons(monkeypatch, MutualScorer(FEATURES, config, progress=False),
                                                    [images[i] for i in order])
    assert {order[i]: sorted(order[j] for j in js) for i, js in shuffled_seen.items()} == seen
    assert np.allclose(shuffled.anomaly_map, first.anomaly_map[order], atol=1e-5)


@pytest.mark.parametrize("size", [8, 9, 50])
def test_mutual_sample_of_all_others_is_the_full_comparison(size):
    images = [_part(seed) for seed in range(9)]
    full = MutualScorer(FEATURES, MutualConfig(neighbourhoods=(1, 3), sample_size=0), progress=False).score(images)
    sampled = MutualScorer(FEATURES, MutualConfig(neighbourhoods=(1, 3), sample_size=size), progress=False).score(images)
    assert np.array_equal(full.anomaly_map, sampled.anomaly_map) and np.array_equal(full.image_score, sampled.image_score)


def test_mutual_full_comparison_matches_brute_force_distances():
    """Each image's score: mean of its `fraction` closest per-image nearest-patch distances (checked against cdist)."""
    torch.manual_seed(0)
    features = torch.randn(6, 5, 4, 4)
    scorer = MutualScorer(FEATURES, MutualConfig(neighbourhoods=(1,), fraction=0.4, sample_size=0), progress=False)
    patches = features.flatten(2).transpose(1, 2)
    expected = []
    for i in range(6):
        others = torch.cat([patches[:i], patches[i + 1 :]])
        d = torch.cdist(patches[i], others.reshape(-1, 5)).view(16, 5, 16).amin(dim=2)
        expected.append(d.topk(2, dim=1, largest=False).values.mean(dim=1))
    from anomaly_vlm.localizer.distance_maps import normalize_scale

    expected = torch.stack(expected)
    assert torch.allclose(scorer.patch_scores(features), normalize_scale(expected, expected).view(6, 4, 4), atol=1e-4)


def _reference_features(source: BuiltinFeatures, images: torch.Tensor) -> torch.Tensor:
    """The built-in features by their definition: direct separable convolutions, pooled in float64."""
    from anomaly_vlm.localizer.features import _separable

    red, green, blue = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    intensity = (red + green + blue) / 3
    colour = torch.cat([intensity, (red - green) / 2, (red + green - 2 * blue) / 4], dim=1)
    maps = []
    for _, (g, d1, d2) in source._kernels:
        maps.append(_separable(colour, g, g))
        gx, gy = _separable(intensity, d1, g), _separable(intensity, g, d1)
        gxx, gyy, gxy = _separable(intensity, d2, g), _separable(intensity, g, d2), _separable(intensity, d1, d1)
        maps += [torch.sqrt(gx**2 + gy**2 + 1e-12), gx.abs(), gy.abs(), (gx + gy).abs() / 2**0.5, (gx - gy).abs() / 2**0.5,
                 (gxx + gyy).abs(), (gxx - gyy).abs(), 2 * gxy.abs()]
    responses = torch.cat(maps, dim=1).double()
    grid = source.config.grid_size
    mean = torch.nn.functional.adaptive_avg_pool2d(responses, grid)
    spread = (torch.nn.functional.adaptive_avg_pool2d(responses**2, grid) - mean**2).clamp_min(0).sqrt()
    return torch.cat(maps, dim=1), torch.cat([mean, spread], dim=1).float()


@pytest.mark.parametrize("size,grid", [(96, 24), (70, 8)])
def test_builtin_features_by_fft_match_direct_convolution(size, grid):
    source = BuiltinFeatures(BuiltinFeatureConfig(image_size=size, grid_size=grid))
    images = torch.stack([source.preprocess(_part(seed)) for seed in range(3)])
    responses, features = _reference_features(source, images)
    assert torch.allclose(source.responses(images), responses, atol=1e-5)
    assert torch.allclose(source.extract(images), features, atol=1e-5)


def test_builtin_responses_keep_a_tall_image_tall():
    """The learned localizer feeds tall images (kolektorsdd is about 1:2.5): the FFT bank must not assume squares."""
    source = BuiltinFeatures(BuiltinFeatureConfig(image_size=64, grid_size=8))
    images = torch.rand(2, 3, 150, 64)
    responses, _ = _reference_features(source, images)
    assert source.responses(images).shape == (2, 33, 150, 64)
    assert torch.allclose(source.responses(images), responses, atol=1e-5)


def _exposed(seed: int, exposure: float, defect: tuple[int, int] | None = None, lit: bool = False) -> Image.Image:
    """A part as a camera whose exposure drifted sees it; `lit`: with a saturated strip along the top."""
    array = textured_image(np.random.default_rng(seed), SIZE) * exposure
    if defect:
        y, x = defect
        array[y : y + 12, x : x + 12] *= 0.6
    if lit:
        array[:8] = 255
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def test_gain_normalization_removes_exposure_and_ignores_saturated_pixels():
    source = BuiltinFeatures(BuiltinFeatureConfig(image_size=SIZE, grid_size=24))
    dim, bright = source.preprocess(_exposed(0, 0.9, lit=True)), source.preprocess(_exposed(0, 1.1, lit=True))
    assert float((dim[:, 8:] - bright[:, 8:]).abs().mean()) < 0.01  # the same part, two exposures: the same input
    # the lit strip is a third of the pixels above mid-grey, yet the median is the part's own
    assert float(dim[:, 8:].mean(dim=0).median()) == pytest.approx(0.5, abs=0.01)
    raw = BuiltinFeatures(BuiltinFeatureConfig(image_size=SIZE, grid_size=24, gain=False))
    assert float((raw.preprocess(_exposed(0, 0.9, lit=True)) - raw.preprocess(_exposed(0, 1.1, lit=True)))[:, 8:].abs().mean()) > 0.05
    assert raw.describe().get("feature_gain") is None and source.describe()["feature_gain"] is True


@pytest.mark.parametrize("gain", [True, False])
def test_a_lighting_drift_after_the_references_is_not_a_defect_with_gain_normalization(gain):
    """References shot at one exposure, the line later 25 % brighter: only the darkened patch should be a defect."""
    source = BuiltinFeatures(BuiltinFeatureConfig(image_size=SIZE, grid_size=24, gain=gain))
    scorer = ReferenceScorer(source, ReferenceConfig(neighbourhoods=(1, 3), augmentations=()), progress=False)
    scorer.fit([_exposed(seed, 1.0) for seed in range(10, 14)])
    scores = scorer.score([_exposed(1, 1.25), _exposed(2, 1.25, defect=(40, 40)), _exposed(3, 1.25)]).image_score
    assert scores[1] > 0.99
    good = scores[[0, 2]]
    assert (good.max() < 0.3) if gain else (good.min() > 0.9)  # without the gain every good part looks defective
