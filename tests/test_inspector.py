"""The Inspector: one image, a resumable batch, and questions about an inspection."""

import json

import numpy as np
import pytest
from PIL import Image

from anomaly_vlm.inspector import Inspector, InspectorConfig
from anomaly_vlm.localizer import ScorerOptions
from anomaly_vlm.types import Inspection
from anomaly_vlm.verdicts import VerdictConfig

from .assistant_models import FindingsAssistant, ScriptedAssistant


def builtin_inspector(assistant=None, threshold: float | None = 0.5) -> Inspector:
    config = InspectorConfig(scorer=ScorerOptions(features="builtin", progress=False),
                             verdicts=VerdictConfig(threshold=threshold))
    return Inspector(config, assistant=assistant or FindingsAssistant())


@pytest.fixture(scope="module")
def references(dataset_root):
    return [Image.open(p).convert("RGB") for p in sorted((dataset_root / "widget" / "train" / "good").glob("*.png"))]


def test_inspect_one_image_with_references_reuses_the_fitted_scorer(dataset_root, references):
    inspector = builtin_inspector()
    path = sorted((dataset_root / "widget" / "test" / "stain").glob("*.png"))[0]
    inspection = inspector.inspect(path, category="widget", references=references)
    assert isinstance(inspection, Inspection) and inspection.image_id == path.name
    assert inspection.image.size == (64, 64) and inspection.anomaly_map.ndim == 2 and inspection.image_size == (64, 64)
    assert inspection.models["mode"] == "reference" and inspection.label == int(inspection.image_score >= 0.5)
    for region in inspection.regions:
        x0, y0, x1, y1 = region.box
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
    assert inspector.scorer("widget") is inspector.scorer("widget", references)
    again = inspector.inspect(Image.open(path), category="widget", image_id="again")
    assert again.image_score == pytest.approx(inspection.image_score) and again.image_id == "again"
    strict = inspector.inspect(path, category="widget", threshold=0.99)
    assert strict.threshold == 0.99 and all(r.peak_score >= 0.99 for r in strict.regions)


def test_fitted_scorers_are_cached_per_reference_set_and_bounded(references):
    inspector = builtin_inspector()
    inspector.config.cached_products = 1
    first = inspector.scorer("widget", references[:2])
    assert inspector.scorer("widget") is first and inspector.scorer(None, references[:2]) is first
    second = inspector.scorer("gadget", references[2:])
    assert second is not first and inspector.scorer("gadget") is second
    assert inspector.scorer(None, references[:2]) is not first          # evicted, fitted again
    assert inspector.scorer("gadget") is inspector.scorer()              # its product name went with it


def test_single_image_without_references_or_clip_is_scored_by_itself_with_a_notice(dataset_root):
    inspector = builtin_inspector(threshold=None)
    inspection = inspector.inspect(sorted((dataset_root / "widget" / "test" / "stain").glob("*.png"))[0])
    assert inspection.models["mode"] == "self" and inspection.threshold_source == "default"
    assert inspection.verdict in ("pass", "review", "fail") and inspection.anomaly_map.shape == (256, 256)
    assert any("weakest mode" in n and "--references" in n for n in inspector.notices)


def test_batch_lists_failures_writes_as_it_goes_and_resumes(dataset_root, tmp_path, monkeypatch):
    images = tmp_path / "images"
    images.mkdir()
    for source in sorted((dataset_root / "widget" / "test").glob("*/*.png"))[:5]:
        (images / f"{source.parent.name}_{source.name}").write_bytes(source.read_bytes())
    (images / "broken.png").write_bytes(b"not a png")
    inspector = builtin_inspector()
    run = inspector.inspect_batch([images], tmp_path / "out", progress=False)
    assert len(run.inspections) == 5 and [f["path"] for f in run.failures] == [str(images / "broken.png")]
    assert "broken.png" in run.failures[0]["error"] and run.failures[0]["kind"] == "unreadable"
    records = sorted((tmp_path / "out" / "records").glob("*.json"))
    assert len(records) == 5 and len(list((tmp_path / "out" / "records").glob("*.npy"))) == 5
    stored = json.loads(records[0].read_text())
    assert set(stored) >= {"fingerprint", "path", "image_digest", "score", "scores", "models", "image_size"}
    assert "threshold" not in stored and "regions" not in stored and "label" not in stored   # threshold-free

    def refuse(*args, **kwargs):
        raise AssertionError("a finished image was scored again")

    monkeypatch.setattr(type(inspector.scorer()), "score", refuse)
    rerun = inspector.inspect_batch([images], tmp_path / "out", progress=False)
    assert [i.image_id for i in rerun.inspections] == [i.image_id for i in run.inspections]
    assert [i.image_score for i in rerun.inspections] == [i.image_score for i in run.inspections]
    assert np.abs(rerun.inspections[0].anomaly_map - run.inspections[0].anomaly_map).max() <= 1e-3   # float16
    assert rerun.reused == 5 and rerun.inspections[0].image is None        # batch runs keep no images in memory


def test_ask_streams_with_history_and_explain_flags_contradictions(dataset_root, references):
    assistant = ScriptedAssistant(["There is a defect.", "It is small.", "No anomaly at all."])
    inspector = builtin_inspector(assistant, threshold=0.0)
    inspection = inspector.inspect(sorted((dataset_root / "widget" / "test" / "stain").glob("*.png"))[1],
                                   references=references)
    dialogue = inspector.dialogue(inspection)
    pieces = list(dialogue.ask("Is it defective?"))
    assert len(pieces) > 1 and "".join(pieces).strip() == "There is a defect."
    streamed = list(inspector.ask(inspection, "How big?", dialogue.turns))
    assert "".join(streamed).strip() == "It is small."
    assert len(assistant.seen[1]) == 4 and assistant.seen[1][2]["content"][0]["text"] == "There is a defect."
    text, flags = inspector.explain(inspection)
    assert text == "No anomaly at all." and (flags != []) == (max(r.peak_score for r in inspection.regions) >= 0.7)
