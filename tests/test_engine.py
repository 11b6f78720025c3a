"""The one engine and record store: what is reused, what is rescored, and that every command agrees."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from anomaly_vlm.cli import build_parser, main
from anomaly_vlm.engine import Engine, fingerprint, scorer_settings
from anomaly_vlm.errors import AnomalyVLMError
from anomaly_vlm.io import collect_samples
from anomaly_vlm.localizer import ScorerOptions, build_localizer, build_scorer
from anomaly_vlm.localizer.reference import ReferenceScorer
from anomaly_vlm.records import RecordStore

BUILTIN = ["--features", "builtin"]


@pytest.fixture()
def images(dataset_root, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for source in sorted((dataset_root / "widget" / "test").glob("*/*.png"))[::2]:
        (folder / f"{source.parent.name}_{source.name}").write_bytes(source.read_bytes())
    return folder


def _report(images, out, *extra) -> dict:
    assert main(["report", str(images), "--out", str(out), "--explain", "0", "--per-image", "none",
                 "--format", "json", *BUILTIN, *extra]) == 0
    return json.loads((out / "report.json").read_text())


def _refuse_scoring(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an image was scored again")

    monkeypatch.setattr(ReferenceScorer, "score", refuse)


def test_score_and_report_give_the_same_score(images, dataset_root, tmp_path):
    references = str(dataset_root / "widget" / "train")
    assert main(["score", str(images), "--out", str(tmp_path / "score"), "--references", references, *BUILTIN]) == 0
    scored = {r["path"]: r["score"] for r in json.loads((tmp_path / "score" / "results.json").read_text())["images"]}
    reported = {i["path"]: i["image_score"] for i in _report(images, tmp_path / "report", "--references", references)["images"]}
    assert scored.keys() == reported.keys() and len(scored) == 6
    assert all(scored[p] == pytest.approx(reported[p], abs=1e-9) for p in scored)


def test_a_new_threshold_relabels_without_rescoring(images, dataset_root, tmp_path, monkeypatch, capsys):
    references = str(dataset_root / "widget" / "train")
    first = _report(images, tmp_path / "out", "--references", references)
    assert first["summary"]["thresholds"]["source"] == "references"
    records = sorted((tmp_path / "out" / "records").glob("*.json"))
    capsys.readouterr()
    _refuse_scoring(monkeypatch)        # fitting the references still runs; scoring an image would fail
    monkeypatch.setattr(ReferenceScorer, "leave_one_out", lambda self: pytest.fail("calibrated a fixed threshold"))
    strict = _report(images, tmp_path / "out", "--references", references, "--threshold", "0.0")
    assert "6 reused from earlier runs, 0 scored now" in capsys.readouterr().out
    assert sorted((tmp_path / "out" / "records").glob("*.json")) == records
    assert [i["verdict"] for i in strict["images"]] == ["fail"] * 6
    assert strict["summary"]["thresholds"] == {"fail": 0.0, "review": None, "source": "fixed", "detail": "set by the user"}
    assert {i["path"]: i["image_score"] for i in strict["images"]} == {i["path"]: i["image_score"] for i in first["images"]}


def test_other_references_rescore(images, dataset_root, tmp_path, capsys):
    train = sorted((dataset_root / "widget" / "train" / "good").glob("*.png"))
    _report(images, tmp_path / "out", "--references", *map(str, train[:3]))
    capsys.readouterr()
    _report(images, tmp_path / "out", "--references", *map(str, train[1:4]))    # same count, other images
    assert "0 reused from earlier runs, 6 scored now" in capsys.readouterr().out
    assert len(list((tmp_path / "out" / "records").glob("*.json"))) == 12
    _report(images, tmp_path / "out", "--references", *map(str, train[:3]))
    assert "6 reused from earlier runs, 0 scored now" in capsys.readouterr().out     # content-addressed


def test_two_prompt_checkpoints_never_share_records():
    tiny = {"name": "anomaly-vlm-tiny", "weights": "none", "image_size": 64, "device": "cpu"}
    torch.manual_seed(0)
    first = build_localizer(None, "prompt", tiny)
    torch.manual_seed(1)
    second = build_localizer(None, "prompt", tiny)
    assert first.describe()["prompts_digest"] != second.describe()["prompts_digest"]
    assert fingerprint(scorer_settings(first), "img") != fingerprint(scorer_settings(second), "img")
    assert fingerprint(scorer_settings(first), "img") == fingerprint(scorer_settings(first), "img")


def test_mutual_sets_are_reused_whole_or_rescored_whole(dataset_root, tmp_path):
    samples = collect_samples([dataset_root / "widget"])[:5]
    scorer = build_scorer(ScorerOptions(mode="mutual", features="builtin", progress=False)).scorer
    store = RecordStore(tmp_path / "records")
    first = Engine(scorer, progress=False).run(samples[:4], store)
    assert first.rescored == 4
    assert Engine(scorer, progress=False).run(samples[:4], store).reused == 4
    grown = Engine(scorer, progress=False).run(samples, store)
    assert grown.rescored == 5                     # one more image changes every image's mutual score


def test_too_few_images_for_mutual_fall_back_to_self(dataset_root):
    samples = collect_samples([dataset_root / "widget"])[:2]
    engine = Engine(build_scorer(ScorerOptions(mode="mutual", features="builtin", progress=False)).scorer,
                    progress=False)
    run = engine.run(samples)
    assert [s.record.models["mode"] for s in run.scored] == ["self", "self"] and not run.failures
    assert "weakest mode" in run.notices[0]


def test_an_image_a_mode_cannot_score_is_not_called_unreadable(dataset_root):
    class Refusing:
        mode, config = "refusing", None

        def score(self, images, object_name=None):
            raise AnomalyVLMError("this mode needs something else")

        def describe(self):
            return {"mode": self.mode}

    samples = collect_samples([dataset_root / "widget"])[:3]
    run = Engine(Refusing(), progress=False).run(samples)
    assert [f["kind"] for f in run.failures] == ["unscored"] * 3
    assert "could not be scored: this mode needs something else" in run.failures[0]["error"]


def test_records_hold_no_threshold_and_a_float16_map(dataset_root, tmp_path):
    samples = collect_samples([dataset_root / "widget"])[:2]
    scorer = build_scorer(ScorerOptions(mode="reference", features="builtin", progress=False),
                          [Image.open(s.path).convert("RGB") for s in collect_samples([dataset_root / "widget" / "train"])]).scorer
    run = Engine(scorer, progress=False).run(samples, RecordStore(tmp_path))
    record = json.loads((tmp_path / f"{run.scored[0].record.fingerprint}.json").read_text())
    assert set(record) == {"format_version", "fingerprint", "path", "image_digest", "score", "image_size", "scores",
                           "modes", "models"}
    assert np.load(tmp_path / f"{run.scored[0].record.fingerprint}.npy").dtype == np.float16


INSPECTING = ["score", "report", "chat", "app"]
LOCALIZER_FLAGS = ["--mode", "--backbone", "--weights", "--image-size", "--prompt-checkpoint", "--features", "--references",
                   "--shots", "--product", "--device", "--batch-size", "--keep-aspect", "--threshold", "--review-threshold"]


def test_every_inspecting_command_takes_the_same_localizer_options():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name in INSPECTING:
        flags = {flag for action in commands[name]._actions for flag in action.option_strings}
        assert set(LOCALIZER_FLAGS) <= flags, (name, set(LOCALIZER_FLAGS) - flags)
    for name in ("report", "chat", "app"):
        flags = {flag for action in commands[name]._actions for flag in action.option_strings}
        assert {"--backend", "--model", "--adapter", "--assistant-device", "--max-new-tokens"} <= flags
    helps = {action.option_strings[0]: action.help for action in commands["report"]._actions if action.option_strings}
    assert "(default: 8)" in helps["--batch-size"] and "(default: 160)" in helps["--max-new-tokens"]
    args = parser.parse_args(["chat", "x.png", "--threshold", "auto", "--mode", "self"])
    assert vars(args)["VerdictConfig.threshold"] is None and vars(args)["ScorerOptions.mode"] == "self"
    with pytest.raises(SystemExit):
        parser.parse_args(["score", "x", "--out", "o", "--threshold", "1.5"])
