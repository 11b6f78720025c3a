"""Files the project reads: pickles never run code, and a wrong file is named with its fix."""

import json
import pickle
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from anomaly_vlm.assistant.adapters import load_adapter
from anomaly_vlm.cli import main
from anomaly_vlm.errors import CheckpointError
from anomaly_vlm.localizer import import_reference

from ..assistant_models import tiny_text_model
from ..synthetic import make_category

RAN = []


class Payload:
    """Unpickling this would run code: a safe loader must refuse it."""

    def __reduce__(self):
        return RAN.append, ("payload ran",)


def test_a_pickle_that_runs_code_is_refused_and_never_runs(tmp_path):
    evil = tmp_path / "epoch_15.pth"
    torch.save({"prompt_learner": {"ctx_pos": Payload()}}, evil)
    assert zipfile.is_zipfile(evil)
    with pytest.raises(CheckpointError, match=r"epoch_15\.pth: refused to load"):
        import_reference(evil, tmp_path / "out")
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match="not a torch.save zip archive"):
        import_reference(plain, tmp_path / "out")
    assert RAN == [] and not (tmp_path / "out").exists()


def test_an_adapter_saved_as_a_pickle_is_refused(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    torch.save({"weights": Payload()}, tmp_path / "adapter_model.bin")
    model, _ = tiny_text_model()
    with pytest.raises(CheckpointError, match="must be adapter_model.safetensors"):
        load_adapter(model, tmp_path)
    assert RAN == []


def test_a_prompt_checkpoint_for_another_backbone_says_so(tmp_path, capsys):
    out = tmp_path / "prompts"
    assert main(["train-prompts", "--data", str(make_category(tmp_path / "data", "widget", size=64)), "--out",
                 str(out), "--backbone", "anomaly-vlm-tiny", "--weights", "none", "--image-size", "64", "--epochs", "1",
                 "--device", "cpu"]) == 0
    config = json.loads((out / "config.json").read_text())
    config["text_width"] = config["text_width"] * 2        # as if trained with a wider text tower
    (out / "config.json").write_text(json.dumps(config))
    code = main(["score", str(tmp_path / "data" / "widget"), "--prompts", str(out), "--out", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert str(out) in err and "text width" in err, err


def test_masks_that_do_not_match_their_images_fail_alone(tmp_path, capsys):
    category = make_category(tmp_path, "widget", size=64)
    wrong = sorted((category / "ground_truth" / "stain").glob("*.png"))[0]
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(wrong)
    code = main(["score", str(category), "--out", str(tmp_path / "run"), "--features", "builtin"])
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert code == 1 and len(results["failures"]) == 1
    assert str(wrong) in results["failures"][0]["error"] and "a mask must have its image's size" in \
        results["failures"][0]["error"]
    assert len(results["images"]) == 11 and (tmp_path / "run" / "metrics.json").is_file()
    assert "pixel_auroc" in json.loads((tmp_path / "run" / "metrics.json").read_text())
