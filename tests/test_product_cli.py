"""Product profiles from the command line, inspecting with --product, the app's environment, the public API."""

import json

import numpy as np
import pytest

import anomaly_vlm
from anomaly_vlm.cli import main
from anomaly_vlm.inspector import Inspector, InspectorConfig
from anomaly_vlm.localizer import ScorerOptions
from anomaly_vlm.localizer.scorer import logit
from anomaly_vlm.products import ProductStore


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ANOMALY_VLM_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_product_add_list_show_inspect_remove(home, dataset_root, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("A grey widget; stains are the usual defect.\n")
    defective = sorted((dataset_root / "widget" / "test" / "stain").glob("*.png"))[:3]
    assert main(["product", "add", "widget", "--good", str(dataset_root / "widget" / "train"),
                 "--defective", *map(str, defective), "--notes", str(notes), "--features", "builtin"]) == 0
    added = capsys.readouterr().out
    assert "product widget: 4 good, 3 defective images" in added and "builtin features: FAIL at" in added
    assert "good images (held out):" in added and "known defective images: 0 PASS" in added
    assert (home / "products" / "widget" / "bank-builtin.safetensors").is_file()

    assert main(["product", "list"]) == 0
    assert capsys.readouterr().out.startswith("widget\t4 good\tbuiltin features")
    assert main(["product", "show", "widget"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["thresholds"]["builtin"]["source"] == "product" and shown["notes"].startswith("A grey widget")
    assert shown["counts"] == {"good": 4, "defective": 3}

    out = tmp_path / "report"
    assert main(["report", str(dataset_root / "widget" / "test"), "--product", "widget", "--out", str(out),
                 "--explain", "0", "--format", "json", "--per-image", "none"]) == 0
    document = json.loads((out / "report.json").read_text())
    stored = shown["thresholds"]["builtin"]
    assert document["summary"]["thresholds"]["fail"] == pytest.approx(stored["fail"])
    assert document["summary"]["thresholds"]["source"] == "product"
    assert document["images"][0]["notes"].startswith("A grey widget")
    assert document["images"][0]["models"]["references_digest"] == shown["reference_digest"]

    assert main(["product", "add", "widget", "--good", str(dataset_root / "widget" / "train")]) == 2
    assert "already exists" in capsys.readouterr().err
    # notes given as text, not as a file: one clear line naming what was given, no profile written
    assert main(["product", "add", "gadget", "--good", str(dataset_root / "widget" / "train"),
                 "--notes", "grey gadgets"]) == 2
    assert "--notes grey gadgets: cannot read it as a text file" in capsys.readouterr().err
    assert not ProductStore().exists("gadget")
    assert main(["product", "remove", "widget"]) == 0 and not ProductStore().exists("widget")
    assert main(["product", "show", "widget"]) == 2 and "no product 'widget'" in capsys.readouterr().err


def test_product_notes_reach_the_findings_block(home, dataset_root):
    from anomaly_vlm.product_fitting import create_product

    create_product(ProductStore(), "widget", [str(dataset_root / "widget" / "train")],
                   notes="Stains are the usual defect.", options=ScorerOptions(features="builtin", progress=False))
    inspector = Inspector(InspectorConfig(scorer=ScorerOptions(features="builtin", progress=False)))
    inspection = inspector.inspect(sorted((dataset_root / "widget" / "test" / "stain").glob("*.png"))[0],
                                   product="widget")
    assert inspection.threshold_source == "product" and inspection.notes == "Stains are the usual defect."
    assert "product notes: Stains are the usual defect." in inspection.findings.block()


def test_app_honours_gradio_environment_and_its_flags_win(monkeypatch):
    from anomaly_vlm import ui

    seen = []
    monkeypatch.setattr(ui, "launch", lambda inspector, config: seen.append(config))
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    assert main(["app", "--features", "builtin"]) == 0
    assert main(["app", "--host", "127.0.0.2", "--port", "8001"]) == 0
    assert (seen[0].host, seen[0].port) == ("0.0.0.0", 7999) and (seen[1].host, seen[1].port) == ("127.0.0.2", 8001)
    monkeypatch.setenv("GRADIO_SERVER_PORT", "seventy")
    assert main(["app"]) == 2


def test_public_api():
    assert set(anomaly_vlm.__all__) >= {"Inspector", "InspectorConfig", "Inspection", "load_image", "build_scorer"}
    assert anomaly_vlm.Inspector is Inspector and callable(anomaly_vlm.load_image)
    with pytest.raises(AttributeError):
        anomaly_vlm.nothing_here


def test_product_learn_fuses_its_own_localizer_and_calibrates_on_held_out_images(home, dataset_root, tmp_path,
                                                                                 capsys):
    learning = ["--learn-steps", "12", "--learn-image-size", "64", "--learn-holdout", "2", "--learn-content", "texture"]
    assert main(["product", "add", "widget", "--good", str(dataset_root / "widget" / "train"), "--features", "builtin",
                 "--learn", *learning]) == 0
    printed = capsys.readouterr().out
    assert "learned localizer for widget" in printed and "2 good images held out of training" in printed
    validation = json.loads((ProductStore().load("widget").folder / "learned" / "learned.json").read_text())["validation"]
    assert (f"alone, on {validation['defective']} simulated defects over the 2 held-out good images: image AUROC "
            f"{validation['image_auroc']:.3f}") in printed
    profile = ProductStore().load("widget")
    assert (profile.folder / "learned" / "learned.safetensors").is_file() and profile.learned["mode"] == "learned"
    assert profile.thresholds["builtin+learned"]["source"] == "product"
    assert not ProductStore().training_folder("widget").exists()
    out = tmp_path / "scores"
    assert main(["score", str(dataset_root / "widget" / "test"), "--product", "widget", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [p["mode"] for p in results["models"]["parts"]] == ["reference", "learned"]
    assert results["thresholds"] == profile.thresholds["builtin+learned"]
    assert all(r["modes"] == ["reference", "learned"] for r in results["images"])
    # fused on the good-part scales calibrated with it: every good image for the bank, the 2 held out for the model
    scales = profile.fusion["builtin+learned"]
    assert scales["reference"]["count"] == len(profile.good) and scales["learned"]["count"] == 2
    assert results["models"]["scales"] == scales
    for row in results["images"]:
        standard = [(logit(row[f"{mode}_score"]) - scales[mode]["mean"]) / scales[mode]["std"] for mode in scales]
        assert row["score"] == pytest.approx(1 / (1 + np.exp(-(np.mean(standard) - 3.0))), rel=1e-4, abs=1e-6)


def test_product_learn_draws_the_product_recipes_defects(home, dataset_root, tmp_path):
    recipe = tmp_path / "thin_cracks.yaml"
    recipe.write_text("name: widget\nsource: {content: texture}\ndefects_per_image: [1, 1]\n"
                      "simulators:\n  crack: {weight: 3, config: {length: [0.3, 0.6]}}\n  scratch: {weight: 1}\n")
    assert main(["product", "add", "widget", "--good", str(dataset_root / "widget" / "train"), "--features",
                 "builtin"]) == 0
    assert main(["product", "learn", "widget", "--learn-steps", "4", "--learn-image-size", "64", "--learn-holdout", "2",
                 "--learn-recipe", str(recipe), "--learn-content", "object"]) == 0
    learned = json.loads((ProductStore().load("widget").folder / "learned" / "learned.json").read_text())
    assert learned["config"]["simulators"] == {"crack": 3.0, "scratch": 1.0}
    assert learned["config"]["simulator_options"] == {"crack": {"length": [0.3, 0.6]}}
    assert learned["config"]["defects_per_image"] == [1, 1]
    assert learned["config"]["content"] == "object", "a flag given on the command line wins over the recipe"
