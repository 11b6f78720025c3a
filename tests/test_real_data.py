"""Real images and a real-size backbone (random weights): slow, run with `pytest -m slow`."""

import json
import shutil

import pytest

from anomaly_vlm.cli import main

from .conftest import SHARED_DATA

pytestmark = pytest.mark.slow


def test_score_shared_bottle_images_with_vit_b16(tmp_path):
    bottle = SHARED_DATA / "mvtec_bottle" / "bottle"
    if not bottle.is_dir():
        pytest.skip("shared MVTec bottle data not present")
    subset = tmp_path / "bottle"
    for defect in ("good", "broken_large"):
        (subset / "test" / defect).mkdir(parents=True)
        for name in ("000.png", "001.png"):
            shutil.copy(bottle / "test" / defect / name, subset / "test" / defect / name)
    out = tmp_path / "run"
    code = main(["score", str(subset), "--backbone", "ViT-B-16", "--weights", "none", "--image-size", "224",
                 "--device", "cpu", "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"image_auroc", "image_ap", "image_f1max"} and "pixel_auroc" not in metrics
    assert len(list((out / "maps").iterdir())) == 4
