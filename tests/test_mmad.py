"""MMAD's protocol offline: its file format, answer parsing, scoring, and `eval-mmad` end to end."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from anomaly_vlm.assistant.backends import TextAssistant
from anomaly_vlm.assistant.mmad import mask_file, parse_entry, read_mmad
from anomaly_vlm.assistant.mmad_scores import score_answers
from anomaly_vlm.cli import main
from anomaly_vlm.errors import AnomalyVLMError, DatasetError
from anomaly_vlm.mmad_questions import MMADQuestion, load_phrasing, parse_letter, phrase_question

from .assistant_models import tiny_text_model

BUILTIN = ["--features", "builtin", "--device", "cpu"]
YES_NO = {"A": "Yes.", "B": "No."}


def _detection(anomalous: bool, answer_letter_of_yes: str = "A") -> dict:
    options = {"A": "Yes.", "B": "No."} if answer_letter_of_yes == "A" else {"A": "No.", "B": "Yes."}
    correct = next(k for k, v in options.items() if (v == "Yes.") == anomalous)
    return {"Question": "Is there any defect in the object?", "Options": options, "Answer": correct,
            "type": "Anomaly Detection"}


def mmad_file(dataset_root: Path, path: Path, per_folder: int = 3, category: str = "widget") -> dict:
    """An MMAD file over a synthetic category: detection + object questions, and a defect question where defective."""
    base = dataset_root / category
    templates = sorted(p.relative_to(dataset_root).as_posix() for p in (base / "train" / "good").iterdir())
    data = {}
    for image in [p for folder in sorted((base / "test").iterdir()) for p in sorted(folder.glob("*.png"))[:per_folder]]:
        key = image.relative_to(dataset_root).as_posix()
        anomalous = "good" not in key.split("/")
        conversation = [_detection(anomalous, "A" if len(data) % 2 == 0 else "B")]
        if anomalous:
            conversation.append({"Question": "What is the type of the defect?", "Answer": "C", "type":
                                 "Defect Classification", "Options": {"A": "a scratch", "B": "a crack",
                                                                      "C": "a red stain", "D": "a hole"}})
        conversation.append({"Question": "What is this?", "Answer": "A", "type": "Object Structure",
                             "Options": {"A": "a textured part", "B": "a bottle", "C": "a cable"}})
        data[key] = {"conversation": conversation, "mask_path": "", "similar_templates": templates[:2],
                     "random_templates": templates[::-1]}
    path.write_text(json.dumps(data))
    return data


class LetterAssistant:
    """Answers every question with `reply(question_text)`; counts the questions it was asked."""

    images = False

    def __init__(self, reply=lambda question: "Answer: A"):
        self.reply, self.asked = reply, []

    def describe(self):
        return {"backend": "letters", "model": "test"}

    def stream(self, messages, images, settings):
        question = messages[-1]["content"][-1]["text"]
        self.asked.append(question)
        yield from (w + " " for w in self.reply(question).split(" "))


@pytest.fixture
def assistant(monkeypatch):
    chosen = LetterAssistant()
    monkeypatch.setattr("anomaly_vlm.inspector.build_assistant", lambda options: chosen)
    return chosen


# ---------------------------------------------------------------- format

def test_reads_mmads_format_and_merges_object_analysis(tmp_path):
    data = {"MVTec-AD/bottle/test/broken_large/000.png": {
        "image_path": "MVTec-AD/bottle/test/broken_large/000.png",
        "conversation": [
            {"Question": "Is there any defect in the object?", "Answer": "A", "Options": {"A": "Yes.", "B": "No."},
             "type": "Anomaly Detection", "annotation": True},
            {"Question": "What is the shape?", "Answer": "B", "Options": {"A": "square", "B": "round"},
             "type": "Object Structure"}],
        "mask_path": "../ground_truth/broken_large/000_mask.png",
        "similar_templates": ["MVTec-AD/bottle/train/good/001.png"], "random_templates": []},
        "MVTec-AD/bottle/test/good/000.png": {"conversation": [_detection(False)]}}
    (tmp_path / "mmad.json").write_text(json.dumps(data))
    first, second = read_mmad(tmp_path / "mmad.json")
    assert first.dataset == "MVTec-AD" and first.anomalous is True and second.anomalous is False
    assert [q.type for q in first.questions] == ["Anomaly Detection", "Object Analysis"]
    assert first.similar_templates == ["MVTec-AD/bottle/train/good/001.png"] and second.similar_templates is None
    assert mask_file(tmp_path, first) == (tmp_path / "MVTec-AD/bottle/ground_truth/broken_large/000_mask.png")
    assert mask_file(tmp_path, second) is None


@pytest.mark.parametrize("value, field", [
    ({"similar_templates": []}, "'conversation'"),
    ({"conversation": {"Question": "q"}}, "'conversation'"),
    ({"conversation": [{"Question": "q", "Answer": "A", "type": "Anomaly Detection"}]}, "conversation[0].Options"),
    ({"conversation": [{"Question": "q", "Options": YES_NO, "Answer": "C", "type": "Anomaly Detection"}]},
     "conversation[0].Answer"),
    ({"conversation": [{"Question": "q", "Options": {"a": "x", "b": "y"}, "Answer": "a", "type": "T"}]},
     "conversation[0].Options"),
    ({"conversation": [_detection(True), {"Question": 3, "Options": YES_NO, "Answer": "A", "type": "T"}]},
     "conversation[1].Question"),
    ({"conversation": [_detection(True)], "similar_templates": "a.png"}, "'similar_templates'"),
    ({"conversation": [_detection(True)], "mask_path": 5}, "'mask_path'"),
])
def test_a_malformed_entry_names_the_entry_and_the_field(value, field):
    with pytest.raises(DatasetError) as error:
        parse_entry("VisA/pcb1/test/bad/007.JPG", value)
    assert issubclass(DatasetError, AnomalyVLMError)
    assert "'VisA/pcb1/test/bad/007.JPG'" in str(error.value) and field in str(error.value)


def test_a_malformed_file_is_one_clear_error_on_the_command_line(tmp_path, capsys):
    (tmp_path / "bad.json").write_text(json.dumps({"x/y/z.png": {"conversation": [{"Question": "q"}]}}))
    assert main(["eval-mmad", "--data", str(tmp_path / "bad.json"), "--root", str(tmp_path),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "'x/y/z.png'" in err and "conversation[0].Options" in err and "Traceback" not in err


# ---------------------------------------------------------------- answers

KINDS = {"A": "a large break", "B": "a small chip", "C": "contamination", "D": "a scratch"}


@pytest.mark.parametrize("answer, options, letter", [
    ("B", KINDS, "B"), ("(B)", KINDS, "B"), ("Answer: C", KINDS, "C"), ("answer: C.", KINDS, "C"),
    ("The answer is D.", KINDS, "D"), ("D. a scratch", KINDS, "D"), ("B) a small chip", KINDS, "B"),
    ("I would say C", KINDS, "C"),
    ("a small chip", KINDS, "B"), ("It shows contamination near the neck.", KINDS, "C"),
    ("A crack.", {"A": "a hole", "B": "a crack"}, "B"),  # "A" as an article is not option A
    ("No, it looks fine.", YES_NO, "B"), ("Yes.", YES_NO, "A"), ("yes there is a defect", YES_NO, "A"),
    ("contaminaton", KINDS, "C"),  # a near-verbatim echo of one option
    ("zzz qqq", KINDS, None), ("", KINDS, None), ("E", KINDS, None), ("the part looks strange", YES_NO, None),
])
def test_letter_parsing(answer, options, letter):
    assert parse_letter(answer, options) == letter


def test_each_question_is_phrased_with_its_options_and_asks_for_the_letter():
    text = phrase_question(MMADQuestion("What is it?", {"A": "x", "B": "y"}, "A", "Object Classification"),
                           load_phrasing(), shots=1)
    assert "Question: What is it?\n- x (A)\n- y (B)" in text and "letter" in text and "1 normal template" in text
    assert parse_letter("y (B)", {"A": "x", "B": "y"}) == "B"  # an answer in the asked form reads as its letter


# ---------------------------------------------------------------- scoring

def _row(image, kind, correct, options=2, anomalous=None, letter="A"):
    return {"image": image, "type": kind, "correct": correct, "options": {chr(65 + i): "" for i in range(options)},
            "anomalous": anomalous, "letter": letter}


def test_scoring_follows_mmad_on_a_hand_made_set():
    rows = [  # 4 normal images: 3 right (1 false alarm); 2 anomalous: 1 right (1 miss)
        *[_row(f"D/p/test/good/{i}.png", "Anomaly Detection", i != 0, anomalous=False) for i in range(4)],
        *[_row(f"D/p/test/bad/{i}.png", "Anomaly Detection", i == 0, anomalous=True) for i in range(2)],
        _row("D/p/test/bad/0.png", "Defect Classification", True, 4),
        _row("D/p/test/bad/1.png", "Defect Classification", False, 4, letter=None),
        _row("D/p/test/good/0.png", "Object Details", True, 3), _row("D/p/test/bad/0.png", "Object Structure",
                                                                     False, 3),
    ]
    scores = score_answers(rows)
    assert scores.detection_accuracy == pytest.approx(4 / 6)
    assert scores.detection_balanced_accuracy == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert scores.per_type == pytest.approx({"Anomaly Detection": 0.625, "Defect Classification": 0.5,
                                             "Object Analysis": 0.5})
    assert list(scores.per_type) == ["Anomaly Detection", "Defect Classification", "Object Analysis"]
    assert scores.average == pytest.approx((0.625 + 0.5 + 0.5) / 3)
    assert scores.false_alarm_rate == pytest.approx(0.25) and scores.miss_rate == pytest.approx(0.5)
    assert scores.chance["Anomaly Detection"] == 0.5 and scores.chance["Defect Classification"] == 0.25
    assert scores.chance["Object Analysis"] == pytest.approx(1 / 3)
    assert scores.chance["average"] == pytest.approx((0.5 + 0.25 + 1 / 3) / 3)
    assert scores.chance["false_alarm_rate"] == 0.5 and scores.chance["miss_rate"] == 0.5
    assert scores.counts["per_type"] == {"Anomaly Detection": 6, "Defect Classification": 2, "Object Analysis": 2}
    assert (scores.counts["normal"], scores.counts["anomalous"], scores.counts["unparsed"]) == (4, 2, 1)
    table = scores.table()
    assert "Anomaly Detection (balanced)" in table and "62.5" in table and "chance" in table
    assert scores.per_dataset == {}


def test_without_labels_on_rows_normal_images_are_those_in_good_folders_and_datasets_are_also_scored_apart():
    rows = [_row("A/p/test/good/0.png", "Anomaly Detection", True), _row("A/p/test/bad/0.png", "Anomaly Detection",
                                                                          False),
            _row("B/q/test/good/0.png", "Anomaly Detection", False)]
    scores = score_answers(rows)
    assert scores.false_alarm_rate == 0.5 and scores.miss_rate == 1.0
    assert scores.per_dataset["A"]["per_type"]["Anomaly Detection"] == 0.5
    assert scores.per_dataset["B"]["false_alarm_rate"] == 1.0


# ---------------------------------------------------------------- eval-mmad end to end

def _eval(data, root, out, *extra):
    return main(["eval-mmad", "--data", str(data), "--root", str(root), "--out", str(out), *BUILTIN, *extra])


def test_eval_mmad_end_to_end_with_a_scripted_assistant(dataset_root, tmp_path, assistant, capsys):
    data = mmad_file(dataset_root, tmp_path / "mmad.json")
    out = tmp_path / "out"
    assert _eval(tmp_path / "mmad.json", dataset_root, out) == 0
    printed = capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    questions = sum(len(e["conversation"]) for e in data.values())
    assert len(rows) == questions == len(assistant.asked)
    assert {"image", "question", "type", "options", "raw_answer", "letter", "correct_answer", "correct"} <= set(rows[0])
    assert all(r["letter"] == "A" and r["correct"] == (r["correct_answer"] == "A") for r in rows)
    findings, _, question = assistant.asked[0].partition("</findings>")
    assert findings.startswith("<findings>") and "Question: " in question and " (A)\n" in question
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("per_type", "average", "detection_balanced_accuracy", "false_alarm_rate", "miss_rate", "counts",
                "chance"):
        assert key in metrics
    assert set(metrics["per_type"]) == {"Anomaly Detection", "Defect Classification", "Object Analysis"}
    assert metrics["per_type"]["Object Analysis"] == 1.0 and metrics["per_type"]["Defect Classification"] == 0.0
    # "A" is "Yes." on even-numbered images: an always-A model says "defective" to those, "normal" to the rest
    detection = [r for r in rows if r["type"] == "Anomaly Detection"]
    normal = [r for r in detection if not r["anomalous"]]
    assert metrics["false_alarm_rate"] == pytest.approx(sum(not r["correct"] for r in normal) / len(normal))
    assert metrics["counts"]["images"] == len(data) and metrics["counts"]["failed_images"] == 0
    assert metrics["localizer"] and metrics["assistant"] == {"backend": "letters", "model": "test"}
    assert "chance %" in printed and "Anomaly Detection (balanced)" in printed and "50.0" in printed


def test_eval_mmad_resumes_after_a_partial_answers_file(dataset_root, tmp_path, assistant):
    data = mmad_file(dataset_root, tmp_path / "mmad.json")
    out = tmp_path / "out"
    assert _eval(tmp_path / "mmad.json", dataset_root, out, "--max-images", "3") == 0
    first = len(assistant.asked)
    assert first == sum(len(e["conversation"]) for e in [data[k] for k in list(data)[::2]])  # spread: 0, 2, 4
    with (out / "answers.jsonl").open("a") as handle:  # a run killed while writing the fourth image
        handle.write('{"image": "widget/test/good/001.png", "index": 0, "ty')
    assert _eval(tmp_path / "mmad.json", dataset_root, out) == 0
    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(assistant.asked) == len(rows) == sum(len(e["conversation"]) for e in data.values())
    assert len({(r["image"], r["index"]) for r in rows}) == len(rows)
    asked = len(assistant.asked)
    assert _eval(tmp_path / "mmad.json", dataset_root, out) == 0 and len(assistant.asked) == asked  # nothing left
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["counts"]["reused"] == len(data) and metrics["localizer"]


def test_a_changed_setup_does_not_mix_into_earlier_answers(dataset_root, tmp_path, assistant, capsys):
    mmad_file(dataset_root, tmp_path / "mmad.json")
    assert _eval(tmp_path / "mmad.json", dataset_root, tmp_path / "out", "--max-images", "1") == 0
    assert _eval(tmp_path / "mmad.json", dataset_root, tmp_path / "out", "--shots", "2") == 2
    assert "shots" in capsys.readouterr().err
    adapter = tmp_path / "adapter"   # the same --adapter folder, retrained to a new version
    adapter.mkdir()
    (adapter / "adapter.json").write_text(json.dumps({"name": "mine", "version": "1"}))
    assert _eval(tmp_path / "mmad.json", dataset_root, tmp_path / "run", "--max-images", "1", "--adapter",
                 str(adapter)) == 0
    (adapter / "adapter.json").write_text(json.dumps({"name": "mine", "version": "2"}))
    assert _eval(tmp_path / "mmad.json", dataset_root, tmp_path / "run", "--adapter", str(adapter)) == 2
    assert "adapter.version differ" in capsys.readouterr().err


def test_an_unreadable_image_or_template_fails_only_its_own_questions(dataset_root, tmp_path, monkeypatch, capsys):
    model, tokenizer = tiny_text_model()
    monkeypatch.setattr("anomaly_vlm.inspector.build_assistant",
                        lambda options: TextAssistant(model, tokenizer, {"backend": "text", "model": "tiny"}))
    data = mmad_file(dataset_root, tmp_path / "mmad.json", per_folder=2)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    keys = list(data)
    data["broken.png"] = dict(data[keys[0]])
    data[keys[1]] = {**data[keys[1]], "similar_templates": ["missing/template.png"]}
    (tmp_path / "mmad.json").write_text(json.dumps(data))
    root = tmp_path / "root"
    root.mkdir()
    (root / "widget").symlink_to(dataset_root / "widget")
    (root / "broken.png").symlink_to(tmp_path / "broken.png")
    out = tmp_path / "out"
    assert _eval(tmp_path / "mmad.json", root, out, "--max-new-tokens", "4") == 1
    err = capsys.readouterr().err
    assert "broken.png" in err and "missing/template.png" in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert {f["image"] for f in metrics["failures"]} == {"broken.png", keys[1]}
    assert metrics["counts"]["failed_images"] == 2
    assert metrics["counts"]["failed_questions"] == len(data[keys[0]]["conversation"]) + \
        len(data[keys[1]]["conversation"])
    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert {r["image"] for r in rows} == set(keys) - {keys[1]}
    assert metrics["counts"]["images"] == len(keys) - 1


def test_templates_are_required_unless_zero_shot(dataset_root, tmp_path, assistant, capsys):
    data = mmad_file(dataset_root, tmp_path / "mmad.json")
    key = list(data)[0]
    data[key].pop("similar_templates")
    (tmp_path / "mmad.json").write_text(json.dumps(data))
    assert _eval(tmp_path / "mmad.json", dataset_root, tmp_path / "o1", "--max-images", "1") == 2
    assert key in (err := capsys.readouterr().err) and "similar_templates" in err
    assert _eval(tmp_path / "mmad.json", dataset_root, tmp_path / "o2", "--max-images", "1", "--shots", "0") == 0
    assert "from the query image alone" in assistant.asked[-1]


# ---------------------------------------------------------------- dev sets

def test_dev_sets_are_written_in_mmads_format_from_folders_and_masks(tmp_path, assistant):
    from .synthetic import make_category

    spec = importlib.util.spec_from_file_location("mmad_dev_sets", Path(__file__).parents[1] / "benchmarks" /
                                                  "mmad_dev_sets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    data = tmp_path / "data"
    make_category(data / "kolektorsdd", "kolektorsdd", normal=2, defective=3, train=3)
    assert module.main(["--data", str(data), "--out", str(tmp_path / "sets")]) == 0
    entries = read_mmad(tmp_path / "sets" / "kolektorsdd.json")
    assert len(entries) == 5 and not (tmp_path / "sets" / "mvtec_bottle.json").exists()
    defective = [e for e in entries if e.anomalous]
    assert len(defective) == 3
    assert [q.type for q in defective[0].questions] == ["Anomaly Detection", "Defect Classification",
                                                        "Defect Localization", "Defect Description",
                                                        "Object Classification"]
    for entry in entries:
        assert all(t.startswith("kolektorsdd/kolektorsdd/train/good/") for t in entry.similar_templates)
        if entry.anomalous:
            assert mask_file(data, entry).is_file()
    again = tmp_path / "again"
    assert module.main(["--data", str(data), "--out", str(again)]) == 0  # seeded: the same file twice
    assert (again / "kolektorsdd.json").read_text() == (tmp_path / "sets" / "kolektorsdd.json").read_text()
    assert _eval(tmp_path / "sets" / "kolektorsdd.json", data, tmp_path / "out", "--max-images", "2") == 0
