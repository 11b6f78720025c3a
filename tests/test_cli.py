import csv
import json

import pytest
from PIL import Image

from anomaly_vlm.cli import main

TINY = ["--backbone", "anomaly-vlm-tiny", "--weights", "none", "--image-size", "64", "--device", "cpu"]


def test_score_category_end_to_end(tmp_path, dataset_root, capsys):
    out = tmp_path / "run"
    assert main(["score", str(dataset_root / "widget"), "--out", str(out), "--batch-size", "5", *TINY]) == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert len(rows) == 12 and set(rows[0]) == {"path", "score", "verdict", "threshold", "review_threshold"}
    results = json.loads((out / "results.json").read_text())
    thresholds = results["thresholds"]
    assert thresholds["source"] == "labels" and "F1-max" in thresholds["detail"]    # no references: the labels
    review = thresholds["review"] if thresholds["review"] is not None else thresholds["fail"]
    assert all(r["verdict"] == ("fail" if r["score"] >= thresholds["fail"] else
                                "review" if r["score"] >= review else "pass") for r in results["images"])
    assert sum(results["counts"].values()) == 12 and "FAIL" in printed
    models = results["models"]
    assert models["backbone"] == "anomaly-vlm-tiny" and models["weights"] == "none"
    assert models["mode"] == "ensemble" and models["prompts"] == "hand-crafted prompt ensemble"
    assert results["images"][0]["modes"] == ["ensemble"]
    assert all((out / r["map"]).is_file() for r in results["images"])
    assert len({r["map"] for r in results["images"]}) == 12
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap", "pixel_aupro"):
        assert 0.0 <= metrics[name] <= 1.0
        assert name in printed
    assert not list(out.rglob("*.tmp"))


def test_score_without_ground_truth_omits_pixel_metrics(tmp_path, dataset_root):
    out = tmp_path / "run"
    assert main(["score", str(dataset_root / "gadget"), "--out", str(out), "--no-maps", *TINY]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "image_auroc" in metrics and "pixel_auroc" not in metrics
    assert not (out / "maps").exists()


def test_score_lists_failures_and_continues(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (32, 32), (90, 90, 90)).save(folder / "good.png")
    (folder / "broken.png").write_text("not an image")
    out = tmp_path / "run"
    assert main(["score", str(folder), "--out", str(out), "--threshold", "0.0", *TINY]) == 1
    assert "broken.png" in capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert [r["verdict"] for r in results["images"]] == ["fail"] and results["thresholds"]["source"] == "fixed"
    assert results["failures"][0]["kind"] == "unreadable"
    assert results["failures"][0]["path"].endswith("broken.png")
    assert not (out / "metrics.json").exists()


def test_train_then_score_with_prompts(tmp_path, dataset_root, capsys):
    ckpt = tmp_path / "prompts"
    assert main(["train-prompts", "--data", str(dataset_root), "--categories", "widget", "--out", str(ckpt),
                 "--epochs", "2", "--batch-size", "6", *TINY]) == 0
    assert (ckpt / "prompts.safetensors").is_file() and (ckpt / "config.json").is_file()
    config = json.loads((ckpt / "config.json").read_text())
    assert config["backbone"] == "anomaly-vlm-tiny" and config["format_version"] == 1
    out = tmp_path / "run"
    assert main(["score", str(dataset_root / "widget"), "--prompt-checkpoint", str(ckpt), "--out", str(out),
                 "--device", "cpu", "--weights", "none"]) == 0
    models = json.loads((out / "results.json").read_text())["models"]
    assert models["mode"] == "prompt" and models["prompts"] == "learned object-agnostic prompts"
    assert models["image_size"] == 64  # taken from the checkpoint
    capsys.readouterr()
    assert main(["score", str(dataset_root / "widget"), "--prompts", str(ckpt), "--out", str(out),
                 "--device", "cpu", "--weights", "none"]) == 0  # the old flag still works, with a notice
    assert "--prompts is deprecated" in capsys.readouterr().err
    assert json.loads((out / "results.json").read_text())["models"]["prompts_digest"] == models["prompts_digest"]


def test_import_prompts_command(tmp_path):
    import torch

    torch.save({"prompt_learner": {"ctx_pos": torch.zeros(1, 1, 12, 32), "ctx_neg": torch.zeros(1, 1, 12, 32),
                                   **{f"compound_prompts_text.{i}": torch.zeros(4, 32) for i in range(8)}}},
               tmp_path / "ref.pth")
    assert main(["import-prompts", str(tmp_path / "ref.pth"), "--out", str(tmp_path / "ck"),
                 "--backbone", "anomaly-vlm-tiny", "--image-size", "64", "--layers", "4"]) == 0
    config = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert config["localizer"]["compat"] is True and config["localizer"]["layers"] == [4]


def test_user_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["score", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), *TINY]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["score"])
