"""Region proposals from anomaly maps, threshold calibration and the inspection record."""

import json

import numpy as np
import pytest

from PIL import Image

from anomaly_vlm.inspector import attach_image, build_inspection
from anomaly_vlm.proposals import ProposalConfig, look_level, propose, regions_from_mask
from anomaly_vlm.verdicts import Thresholds
from anomaly_vlm.types import Inspection

EXACT = ProposalConfig(min_area_fraction=0.0, merge_distance=0.0, top_k=1000)


def _disc(size: int, cx: int, cy: int, radius: int) -> np.ndarray:
    y, x = np.mgrid[:size, :size]
    return (x - cx) ** 2 + (y - cy) ** 2 <= radius ** 2


def _two_blobs() -> np.ndarray:
    """A 100x100 map: a square at the top left with one hot pixel, a disc at the bottom right."""
    anomaly_map = np.full((100, 100), 0.1)
    anomaly_map[10:30, 5:25] = 0.6
    anomaly_map[15, 12] = 0.95
    anomaly_map[_disc(100, 75, 80, 8)] = 0.8
    return anomaly_map


def test_two_blobs_give_their_boxes_words_and_scores():
    square, disc = propose(_two_blobs(), 0.5)
    assert square.box == (5, 10, 25, 30)
    assert square.box_norm == pytest.approx((0.05, 0.10, 0.25, 0.30))
    assert square.location == "top left"
    assert square.peak_score == pytest.approx(0.95)
    assert square.mean_score == pytest.approx((399 * 0.6 + 0.95) / 400)
    assert square.area_fraction == pytest.approx(400 / 10_000)
    assert disc.box == (67, 72, 84, 89)
    assert disc.box_norm == pytest.approx((0.67, 0.72, 0.84, 0.89))
    assert disc.location == "bottom right"
    assert (disc.peak_score, disc.mean_score) == pytest.approx((0.8, 0.8))
    assert disc.area_fraction == pytest.approx(_disc(100, 75, 80, 8).sum() / 10_000)


@pytest.mark.parametrize("seed", range(4))
def test_without_merging_or_resizing_the_boxes_are_the_mask_components(seed):
    anomaly_map = np.random.default_rng(seed).random((40, 50))
    regions = propose(anomaly_map, 0.8, EXACT)
    expected = sorted(regions_from_mask(anomaly_map >= 0.8, anomaly_map), key=lambda r: r.box)
    found = sorted(regions, key=lambda r: r.box)
    assert [(r.box, r.location) for r in found] == [(r.box, r.location) for r in expected]
    fields = lambda rs: [(r.area_fraction, r.peak_score, r.mean_score) for r in rs]  # noqa: E731
    assert np.allclose(fields(found), fields(expected), rtol=0, atol=1e-12)
    assert [r.peak_score for r in regions] == sorted((r.peak_score for r in regions), reverse=True)


def test_specks_below_the_minimum_area_are_dropped():
    anomaly_map = _two_blobs()
    anomaly_map[50, 50] = 1.0   # 1 pixel, under 0.0005 * 10_000 = 5
    anomaly_map[2:4, 60:62] = 0.9  # 4 pixels
    assert [r.box for r in propose(anomaly_map, 0.5)] == [(5, 10, 25, 30), (67, 72, 84, 89)]
    kept = propose(anomaly_map, 0.5, ProposalConfig(min_area_fraction=0.0))
    assert [r.box for r in kept] == [(50, 50, 51, 51), (5, 10, 25, 30), (60, 2, 62, 4), (67, 72, 84, 89)]


def test_nearby_blobs_merge_within_the_distance_and_only_count_their_own_pixels():
    anomaly_map = np.zeros((100, 100))
    anomaly_map[40:50, 20:30] = 0.9
    anomaly_map[40:50, 33:43] = 0.7  # a gap of 3 pixels
    merged, = propose(anomaly_map, 0.5, ProposalConfig(merge_distance=0.03))
    assert merged.box == (20, 40, 43, 50)
    assert merged.area_fraction == pytest.approx(200 / 10_000)
    assert (merged.peak_score, merged.mean_score) == pytest.approx((0.9, 0.8))
    for distance in (0.0, 0.02):
        apart = propose(anomaly_map, 0.5, ProposalConfig(merge_distance=distance))
        assert [r.box for r in apart] == [(20, 40, 30, 50), (33, 40, 43, 50)]


def test_top_k_keeps_the_highest_peaks_and_ties_go_to_the_larger():
    anomaly_map = np.zeros((100, 100))
    for i, peak in enumerate((0.6, 0.9, 0.7, 0.8)):
        anomaly_map[10 + 20 * i:20 + 20 * i, 10:20] = peak
    assert [r.peak_score for r in propose(anomaly_map, 0.5, ProposalConfig(top_k=2))] == pytest.approx([0.9, 0.8])
    anomaly_map[85:95, 50:60] = 0.9
    anomaly_map[5:10, 50:55] = 0.9
    boxes = [r.box for r in propose(anomaly_map, 0.5, ProposalConfig(top_k=3))]
    assert boxes == [(10, 30, 20, 40), (50, 85, 60, 95), (50, 5, 55, 10)]


def _wide_square() -> np.ndarray:
    anomaly_map = np.zeros((64, 64))
    anomaly_map[8:16, 40:56] = 0.9
    return anomaly_map


def test_boxes_are_in_pixels_of_the_image_size():
    region, = propose(_wide_square(), 0.45, image_size=(256, 128))
    assert region.box == (160, 16, 224, 32)
    assert region.box_norm == pytest.approx((0.625, 0.125, 0.875, 0.25))
    assert region.location == "top right"
    assert region.area_fraction == 1020 / (256 * 128)  # the box less one corner pixel each, softened by resizing


def test_a_capped_map_gives_boxes_scaled_to_the_full_image():
    region, = propose(_wide_square(), 0.45, ProposalConfig(max_side=512), image_size=(2048, 1024))
    assert region.box == (1280, 128, 1792, 256)
    assert region.area_fraction == (128 * 32 - 12) / (512 * 256)  # counted on the 512x256 capped map
    anomaly_map = _wide_square()
    anomaly_map[56:64, 60:64] = 0.9  # touches the bottom right corner
    # capped at 512x358; rows 45:90 there are 87.99:175.98 in the image, rounded outwards
    capped = propose(anomaly_map, 0.45, ProposalConfig(max_side=512), image_size=(1000, 700))
    full = propose(anomaly_map, 0.45, ProposalConfig(max_side=1000), image_size=(1000, 700))
    assert [r.box for r in capped] == [(625, 87, 875, 176), (937, 612, 1000, 700)]
    assert [r.box for r in full] == [(625, 87, 875, 175), (937, 612, 1000, 700)]


def test_a_part_scored_over_the_threshold_whose_map_stays_under_it_still_shows_where_to_look():
    anomaly_map = np.full((100, 100), 0.05)
    anomaly_map[_disc(100, 75, 20, 6)] = 0.25            # the map's strongest area, under REVIEW at 0.3
    thresholds = Thresholds(0.6, 0.3)
    assert look_level(anomaly_map, 0.2, 0.3) == 0.3      # a part under the threshold: nothing to show
    assert look_level(_two_blobs(), 0.9, 0.3) == 0.3     # a map that reaches it: regions at the threshold
    assert look_level(anomaly_map, 0.4, 0.3) == pytest.approx((0.05 + 0.25) / 2)
    assert look_level(np.full((100, 100), 0.1), 0.4, 0.3) == 0.3    # a flat map has no area to point at
    assert build_inspection("pass", anomaly_map, 0.2, thresholds, {}).regions == []
    image = Image.fromarray(np.full((100, 100, 3), 128, np.uint8))
    inspection = build_inspection("review", anomaly_map, 0.4, thresholds, {}, image=image)
    assert inspection.verdict == "review" and len(inspection.regions) == 1
    region = inspection.regions[0]
    assert region.location == "top right" and region.peak_score == pytest.approx(0.25)
    assert region.area_fraction == pytest.approx(_disc(100, 75, 20, 6).sum() / 10_000)
    assert region.attributes.shape == "compact" and region.attributes.solidity < 0.95   # measured on the disc, not its box
    batch = build_inspection("review", anomaly_map, 0.4, thresholds, {})      # a batch run keeps no image
    attach_image(batch, image)
    assert batch.regions[0].attributes == region.attributes


def test_an_empty_mask_gives_no_regions():
    assert propose(_two_blobs(), 1.0) == []


@pytest.mark.parametrize("anomaly_map,threshold,message", [
    (np.zeros((2, 8, 8)), 0.5, "2D"),
    (np.zeros(8), 0.5, "2D"),
    (np.full((8, 8), np.nan), 0.5, "NaN"),
    (np.zeros((8, 8)), 1.5, "threshold"),
    (np.zeros((8, 8)), -0.1, "threshold"),
])
def test_bad_maps_and_thresholds_are_refused(anomaly_map, threshold, message):
    with pytest.raises(ValueError, match=message):
        propose(anomaly_map, threshold)


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="top_k"):
        ProposalConfig(top_k=0)
    with pytest.raises(ValueError, match="merge_distance"):
        ProposalConfig(merge_distance=-0.1)


MODELS = {"localizer": "tiny-clip", "scorer": {"name": "mutual", "k": 3}}


def test_inspection_round_trips_through_json():
    inspection = build_inspection("widget/test/crack/000", _two_blobs(), 0.91, Thresholds(0.5), MODELS,
                                  image_size=(200, 200))
    assert inspection.label == 1 and inspection.image_size == (200, 200)
    # bilinear doubling softens the square's one hot pixel below the disc's 0.8, and each edge crosses 0.5 a pixel in
    assert [r.box for r in inspection.regions] == [(135, 145, 167, 177), (11, 21, 49, 59)]
    assert [r.peak_score for r in inspection.regions] == pytest.approx([0.8, 0.796875])
    data = json.loads(json.dumps(inspection.to_dict()))
    assert data["label"] == 1 and data["models"] == MODELS and data["image_size"] == [200, 200]
    assert Inspection.from_dict(data).to_dict() == data == inspection.to_dict()
    assert Inspection.from_dict(data).regions[1].box == (11, 21, 49, 59)


def test_a_score_just_below_the_threshold_keeps_its_label_through_json():
    inspection = Inspection("a", 0.49999, 0.5, [], {}, None)
    data = json.loads(json.dumps(inspection.to_dict()))
    assert data["label"] == 0 and Inspection.from_dict(data).label == 0
    assert Inspection.from_dict(data).to_dict() == data


def test_findings_block_lists_the_regions_and_normal_images_still_show_them():
    inspection = build_inspection("good/001", _two_blobs(), 0.3, Thresholds(0.5), MODELS)
    assert inspection.label == 0 and inspection.image_size == (100, 100) and len(inspection.regions) == 2
    block = inspection.findings.block()
    assert "(below the threshold 0.50)" in block and "candidate regions: 2" in block
    assert "1. top left, box [0.05, 0.10, 0.25, 0.30], 4.0% of the image, peak score 0.95" in block
    assert "2. bottom right, box [0.67, 0.72, 0.84, 0.89]" in block
