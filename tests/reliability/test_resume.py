"""Killing `score`, `synth` or `tune` midway and running it again finishes the job without redoing it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomaly_vlm.cli import main

from ..assistant_models import tiny_text_model
from ..conftest import RECIPES

COMMAND = [sys.executable, "-c", "import sys; from anomaly_vlm.cli import main; sys.exit(main(sys.argv[1:]))"]


def _kill_when(args: list[str], ready, timeout: float = 120) -> bool:
    """Run the CLI in a child and SIGKILL it once `ready()` holds; False if it finished first."""
    child = subprocess.Popen(COMMAND + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if child.poll() is not None:
                return False
            if ready():
                child.send_signal(signal.SIGKILL)
                child.wait()
                return True
            time.sleep(0.02)
        raise AssertionError(f"{args[0]} neither finished nor got ready in {timeout} s")
    finally:
        if child.poll() is None:
            child.kill()


def _snapshot(folder: Path, pattern: str) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob(pattern)}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(5)
    for split, count in (("good", 4), ("line", 40)):
        for i in range(count):
            image = rng.normal(128, 10, (128, 128, 3))
            if split == "line" and i % 3 == 0:
                image[30:50, 40:70] = 250
            (folder / split).mkdir(exist_ok=True)
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / split / f"{i:03d}.png")
    return folder


def test_score_resumes_without_rescoring_finished_images(photos, tmp_path):
    args = ["score", str(photos / "line"), "--references", str(photos / "good"), "--features", "builtin",
            "--no-maps"]
    out = tmp_path / "killed"
    killed = _kill_when(args + ["--out", str(out)], lambda: len(list((out / "records").glob("*.json"))) >= 1)
    before = _snapshot(out / "records", "*.json")
    assert before and all(json.loads(p.read_text())["fingerprint"] for p in (out / "records").glob("*.json"))
    assert main(args + ["--out", str(out)]) == 0
    assert not list(out.rglob("*.tmp"))
    after = _snapshot(out / "records", "*.json")
    assert len(after) == 40 and all(after[name] == stamp for name, stamp in before.items())
    assert main(args + ["--out", str(tmp_path / "fresh")]) == 0
    resumed = json.loads((out / "results.json").read_text())["images"]
    fresh = json.loads((tmp_path / "fresh" / "results.json").read_text())["images"]
    assert [r["path"] for r in resumed] == [r["path"] for r in fresh]
    assert sum(r["reused"] for r in resumed) == len(before)
    assert np.allclose([r["score"] for r in resumed], [r["score"] for r in fresh], atol=1e-6)
    if killed:
        assert len(before) < 40


def test_synth_resumes_to_the_same_files(tmp_path):
    args = ["synth", "--recipe", str(RECIPES / "procedural.yaml"), "--num", "120", "--seed", "4", "--workers", "1"]
    out = tmp_path / "killed"
    _kill_when(args + ["--out", str(out)], lambda: len(list((out / "samples").glob("*.json"))) >= 5)
    before = _snapshot(out / "samples", "*.json")
    assert before and all(json.loads(p.read_text()) for p in (out / "samples").glob("*.json"))
    assert main(args + ["--out", str(out)]) == 0
    assert not list(out.rglob("*.tmp"))
    assert main(args + ["--out", str(tmp_path / "fresh")]) == 0
    after = _snapshot(out / "samples", "*.json")
    assert all(after[name] == stamp for name, stamp in before.items())
    for path in sorted((tmp_path / "fresh").rglob("*.png")):
        assert path.read_bytes() == (out / path.relative_to(tmp_path / "fresh")).read_bytes(), path


def test_tune_resumes_from_its_checkpoint(conversations, tmp_path):
    model_dir = tmp_path / "tiny-lm"
    model, tokenizer = tiny_text_model()
    model.save_pretrained(str(model_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(model_dir))
    args = ["tune", "--data", str(conversations), "--model", str(model_dir), "--batch-size", "1", "--epochs", "20",
            "--save-every", "5", "--precision", "fp32", "--device", "cpu", "--lr", "1e-3"]
    out = tmp_path / "adapter"
    state = out / "checkpoint" / "state.json"
    killed = _kill_when(args + ["--out", str(out)], state.is_file)
    assert killed, "tuning finished before its first checkpoint"
    saved = json.loads(state.read_text())
    assert main(args + ["--out", str(out), "--resume"]) == 0
    record = json.loads((out / "tune.json").read_text())
    assert record["steps"] == 120 and len(record["losses"]) == 120
    assert record["losses"][: saved["step"]] == saved["losses"]
    assert (out / "adapter_model.safetensors").is_file()
