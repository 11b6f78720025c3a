"""Region attributes: what a region looks like, measured on synthetic images made here."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from anomaly_vlm.attributes import RegionAttributes, ellipse_mask, measure, size_word
from anomaly_vlm.inspector import attach_image, build_inspection
from anomaly_vlm.proposals import ProposalConfig
from anomaly_vlm.synth.findings import FindingsNoise, simulate_findings
from anomaly_vlm.synth.ground_truth import ground_truth
from anomaly_vlm.types import Findings, Inspection, Region
from anomaly_vlm.verdicts import Thresholds

SIDE = 160


def _grey(value: int = 128) -> np.ndarray:
    return np.full((SIDE, SIDE, 3), value, np.uint8)


def _dark_diagonal() -> tuple[np.ndarray, np.ndarray]:
    image = _grey()
    cv2.line(image, (20, 140), (140, 20), (35, 35, 35), 2)
    return image, image[..., 0] < 100


def _bright_blob() -> tuple[np.ndarray, np.ndarray]:
    image = _grey(90)
    cv2.circle(image, (80, 80), 14, (235, 235, 235), -1)
    return image, image[..., 0] > 200


def test_a_thin_dark_diagonal_line_is_elongated_diagonal_darker_with_more_edges():
    image, mask = _dark_diagonal()
    found = measure(image, mask)
    assert (found.shape, found.orientation, found.contrast) == ("elongated", "diagonal", "darker")
    assert found.texture == "more edges" and found.hue == "none"
    assert found.elongation > 10 and found.angle == pytest.approx(45, abs=5) and found.luminance_difference < -20
    # a map-like mask, wider than the line, reads the same
    wide = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    assert (measure(image, wide).shape, measure(image, wide).orientation) == ("elongated", "diagonal")
    assert measure(image, wide).contrast == "darker"


@pytest.mark.parametrize("rows,columns,word", [((78, 81), (10, 150), "horizontal"), ((10, 150), (78, 81), "vertical")])
def test_straight_lines_name_their_direction(rows, columns, word):
    image = _grey()
    image[slice(*rows), slice(*columns)] = 30
    found = measure(image, image[..., 0] < 100)
    assert (found.shape, found.orientation) == ("elongated", word)


def test_a_bright_round_blob_is_compact_and_brighter():
    image, mask = _bright_blob()
    found = measure(image, mask)
    assert (found.shape, found.orientation, found.contrast) == ("compact", None, "brighter")
    assert found.elongation < 1.2 and found.solidity > 0.9 and found.luminance_difference > 20


def test_a_ragged_region_is_irregular():
    mask = np.zeros((SIDE, SIDE), bool)
    for angle in np.linspace(0, 2 * np.pi, 7, endpoint=False):   # a star: solid in the middle, mostly hull
        end = (int(80 + 60 * np.cos(angle)), int(80 + 60 * np.sin(angle)))
        cv2.line(mask.view(np.uint8), (80, 80), end, 1, 5)
    assert measure(_grey(), mask).shape == "irregular"


def test_a_red_patch_on_grey_is_a_reddish_colour_shift():
    image, mask = _grey(), np.zeros((SIDE, SIDE), bool)
    image[60:100, 60:100] = (200, 45, 45)
    mask[60:100, 60:100] = True
    found = measure(image, mask)
    assert found.hue == "reddish" and found.colour_shift > 20
    blue = _grey()
    blue[60:100, 60:100] = (60, 80, 210)
    assert measure(blue, mask).hue == "bluish"
    assert measure(_grey(), mask).hue == "none" and measure(_grey(), mask).colour_shift < 1


def test_a_noisy_patch_on_a_smooth_image_has_more_texture_and_a_smooth_one_less():
    rng = np.random.default_rng(0)
    smooth = cv2.GaussianBlur(rng.integers(90, 170, (SIDE, SIDE, 3)).astype(np.uint8), (0, 0), 6)
    mask = np.zeros((SIDE, SIDE), bool)
    mask[55:105, 55:105] = True
    noisy = smooth.copy()
    noisy[mask] = np.clip(noisy[mask].astype(int) + rng.integers(-40, 41, (int(mask.sum()), 1)), 0, 255)
    found = measure(noisy, mask)
    assert found.texture == "more edges" and found.contrast == "similar" and found.texture_ratio > 2
    busy = rng.integers(0, 256, (SIDE, SIDE, 3)).astype(np.uint8)
    busy[mask] = 128
    assert measure(busy, mask).texture == "smoother"


def test_size_words_and_bad_inputs():
    assert [size_word(a) for a in (0.0005, 0.005, 0.02, 0.2)] == ["tiny", "small", "medium", "large"]
    image, mask = _dark_diagonal()
    with pytest.raises(ValueError, match="empty"):
        measure(image, np.zeros_like(mask))
    with pytest.raises(ValueError, match="match"):
        measure(image, mask[:-1])
    with pytest.raises(ValueError, match="shape"):
        RegionAttributes("blobby", "small", "darker", "none", "similar")
    # a grey (H x W) image is taken as RGB; the whole image as the region has no surroundings but still measures
    assert measure(image[..., 0], mask).contrast == "darker"
    assert measure(image, np.ones_like(mask)).contrast == "similar"


def test_describe_reads_as_a_phrase():
    found = measure(*_dark_diagonal())
    assert found.describe() == ("elongated diagonal, medium, darker than its surroundings, no colour shift, "
                                "more edges")
    assert found.describe(short=True) == "elongated diagonal, medium, darker, no colour shift, more edges"
    red = RegionAttributes("compact", "small", "similar", "reddish", "similar")
    assert red.describe() == "compact, small, similar brightness, reddish, similar texture"


def _region(attributes: RegionAttributes | None = None) -> Region:
    return Region((10, 20, 50, 60), (0.1, 0.2, 0.5, 0.6), 0.16, "left", 0.91, 0.7, attributes)


def test_region_json_round_trips_with_and_without_attributes():
    measured = _region(measure(*_dark_diagonal()))
    data = json.loads(json.dumps(measured.to_dict()))
    assert data["attributes"]["shape"] == "elongated" and Region.from_dict(data) == measured
    plain = _region()
    assert "attributes" not in plain.to_dict() and Region.from_dict(json.loads(json.dumps(plain.to_dict()))) == plain
    old = {"box": [10, 20, 50, 60], "box_norm": [0.1, 0.2, 0.5, 0.6], "area_fraction": 0.16, "location": "left"}
    assert Region.from_dict(old).attributes is None
    assert Region.from_dict({**old, "attributes": None}).attributes is None


def test_the_findings_block_carries_the_phrase():
    findings = Findings(0.93, 0.5, [_region(measure(*_dark_diagonal())), _region()])
    lines = findings.block().splitlines()
    assert lines[3] == ("1. left, box [0.10, 0.20, 0.50, 0.60], 16.0% of the image, peak score 0.91; "
                        "elongated diagonal, medium, darker, no colour shift, more edges")
    assert lines[4].endswith("peak score 0.91")
    assert Findings.from_dict(json.loads(json.dumps(findings.to_dict()))).block() == findings.block()


def _blob_map() -> np.ndarray:
    """A map at half the image's resolution, hot over the bright blob."""
    scores = np.zeros((SIDE // 2, SIDE // 2), np.float32)
    cv2.circle(scores, (40, 40), 8, 0.9, -1)
    return cv2.GaussianBlur(scores, (0, 0), 1.5)


def test_build_inspection_measures_regions_when_the_image_is_at_hand():
    image, _ = _bright_blob()
    with_image = build_inspection("blob", _blob_map(), 0.9, Thresholds(0.5), {}, (SIDE, SIDE),
                                  image=Image.fromarray(image))
    region, = with_image.regions
    assert region.attributes is not None
    assert (region.attributes.shape, region.attributes.contrast) == ("compact", "brighter")
    assert region.looks() in with_image.findings.block()
    data = json.loads(json.dumps(with_image.to_dict()))
    assert Inspection.from_dict(data).to_dict() == data and Inspection.from_dict(data).regions[0].looks() == region.looks()
    without = build_inspection("blob", _blob_map(), 0.9, Thresholds(0.5), {}, (SIDE, SIDE))
    assert [r.attributes for r in without.regions] == [None]
    assert [r.box for r in without.regions] == [r.box for r in with_image.regions]
    assert "attributes" not in without.to_dict()["regions"][0]
    unmeasured = build_inspection("blob", _blob_map(), 0.9, Thresholds(0.5), {}, (SIDE, SIDE),
                                  ProposalConfig(attributes=False), Image.fromarray(image))
    assert [r.attributes for r in unmeasured.regions] == [None] and region.looks() not in unmeasured.findings.block()
    attach_image(unmeasured, Image.fromarray(image), ProposalConfig(attributes=False))
    assert unmeasured.regions[0].attributes is None and unmeasured.image is not None
    attach_image(unmeasured, Image.fromarray(image))
    assert unmeasured.regions[0].looks() == region.looks()


def test_simulated_findings_carry_attributes_measured_on_the_image():
    normal = _grey()
    defective, mask = _dark_diagonal()
    truth = ground_truth(normal, defective, mask, ["scratch"])
    both = FindingsNoise(0.0, 1.0, 0.1)
    plain = simulate_findings(truth, (SIDE, SIDE), np.random.default_rng(3), both)
    measured = simulate_findings(truth, (SIDE, SIDE), np.random.default_rng(3), both, image=defective, mask=mask)
    # measuring draws nothing: the same boxes and scores as without the image
    assert [(r.box, r.peak_score) for r in measured.regions] == [(r.box, r.peak_score) for r in plain.regions]
    assert len(plain.regions) == 2 and all(r.attributes is None for r in plain.regions)
    assert all(r.attributes is not None for r in measured.regions)
    # a true region is measured on its ground-truth pixels, whatever the jitter did to its box
    true, = simulate_findings(truth, (SIDE, SIDE), np.random.default_rng(3), FindingsNoise(0.0, 0.0, 0.3),
                              image=defective, mask=mask).regions
    assert true.attributes == measure(defective, mask)
    assert "elongated diagonal, medium, darker" in Findings(0.9, 0.5, [true]).block()
    # a false alarm on a flat image is measured on the ellipse of its box: nothing to see there
    alarm, = simulate_findings(ground_truth(normal, normal, np.zeros_like(mask), []), (SIDE, SIDE),
                               np.random.default_rng(3), FindingsNoise(false_alarm_rate=1.0), image=normal).regions
    assert (alarm.attributes.contrast, alarm.attributes.hue, alarm.attributes.texture) == ("similar", "none", "similar")
    with pytest.raises(ValueError, match="size"):
        simulate_findings(truth, (SIDE + 1, SIDE), np.random.default_rng(3), both, image=defective)


def test_an_ellipse_mask_fills_its_box():
    mask = ellipse_mask((50, 60), (10, 10, 30, 20))
    ys, xs = np.nonzero(mask)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (10, 29, 10, 19)
    assert ellipse_mask((5, 5), (2, 2, 3, 3)).sum() == 1
