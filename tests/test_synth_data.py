"""Ground truth, simulated findings and conversations of synthesized samples."""

import re
from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from anomaly_vlm.assistant.dialogue import contradictions, says_anomalous
from anomaly_vlm.attributes import RegionAttributes
from anomaly_vlm.configs import ConfigError, from_dict
from anomaly_vlm.proposals import grid_location, regions_from_mask
from anomaly_vlm.synth.conversations import ConversationConfig, Phrasebook, build_conversation, mmad_question
from anomaly_vlm.synth.findings import FindingsNoise, simulate_findings
from anomaly_vlm.synth.recipe import recipe_from_dict
from anomaly_vlm.synth.ground_truth import ground_truth, severity_grade
from anomaly_vlm.types import Findings
from anomaly_vlm.vocabulary import LOCATIONS

from .synthetic import tiny_chat_tokenizer

def _sample(defect: bool = True):
    original = np.full((90, 120, 3), 100, np.uint8)
    defective = original.copy()
    mask = np.zeros((90, 120), bool)
    if defect:
        mask[5:20, 90:110] = True      # top right
        mask[60:80, 50:70] = True      # bottom
        defective[mask] = 200
    return original, defective, mask


def test_boxes_are_the_mask_components_and_words_follow_the_box_centre():
    original, defective, mask = _sample()
    truth = ground_truth(original, defective, mask, ["stain", "stain"])
    assert [r.box for r in truth.regions] == [(50, 60, 70, 80), (90, 5, 110, 20)]
    assert [r.location for r in truth.regions] == ["bottom", "top right"]
    assert truth.regions[1].box_norm == pytest.approx((90 / 120, 5 / 90, 110 / 120, 20 / 90))
    assert truth.area_fraction == pytest.approx(mask.mean())
    assert truth.defect_types == ["stain"] and truth.contrast == pytest.approx(100)
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3)))
    expected = sorted((s[1].start, s[0].start, s[1].stop, s[0].stop) for s in ndimage.find_objects(labels))
    assert sorted(r.box for r in regions_from_mask(mask)) == expected


@pytest.mark.parametrize("x,y,word", [(0, 0, "top left"), (50, 10, "top"), (99, 0, "top right"), (10, 50, "left"),
                                      (50, 50, "center"), (90, 50, "right"), (0, 99, "bottom left"),
                                      (50, 90, "bottom"), (99, 99, "bottom right")])
def test_grid_words(x, y, word):
    assert grid_location(x, y, 100, 100) == word and word in LOCATIONS


def test_severity_grows_with_size_and_contrast():
    assert severity_grade(0.001, 20) == "minor"
    assert severity_grade(0.02, 60) == "moderate"
    assert severity_grade(0.2, 100) == "severe"


def test_simulated_findings_miss_jitter_and_false_alarms():
    original, defective, mask = _sample()
    truth = ground_truth(original, defective, mask, ["scratch"])
    exact = simulate_findings(truth, (120, 90), np.random.default_rng(0), FindingsNoise(0.0, 0.0, 0.0))
    assert sorted(r.box for r in exact.regions) == sorted(r.box for r in truth.regions) and exact.anomalous
    missed = simulate_findings(truth, (120, 90), np.random.default_rng(0), FindingsNoise(miss_rate=1.0, false_alarm_rate=0.0))
    assert missed.regions == [] and not missed.anomalous
    normal = ground_truth(*_sample(defect=False), [])
    alarm = simulate_findings(normal, (120, 90), np.random.default_rng(0), FindingsNoise(false_alarm_rate=1.0))
    assert len(alarm.regions) == 1 and alarm.regions[0].peak_score <= 0.7
    for region in alarm.regions + exact.regions:
        x0, y0, x1, y1 = region.box
        assert 0 <= x0 < x1 <= 120 and 0 <= y0 < y1 <= 90
    assert Findings.from_dict(exact.to_dict()).block() == exact.block()
    capped = simulate_findings(truth, (120, 90), np.random.default_rng(0), FindingsNoise(0.0, 1.0, 0.0, top_k=2))
    assert len(capped.regions) == 2 and capped.block().count("peak score") == 2
    assert capped.regions[0].peak_score >= capped.regions[1].peak_score


def test_simulated_findings_draw_calibrated_thresholds_and_review_bands():
    original, defective, mask = _sample()
    defect = ground_truth(original, defective, mask, ["scratch"])
    normal = ground_truth(*_sample(defect=False), [])
    fixed = simulate_findings(defect, (120, 90), np.random.default_rng(0), FindingsNoise(0.0, 0.0, 0.0))
    assert fixed.threshold == 0.5 and fixed.review_threshold is None
    noise = FindingsNoise(0.0, 0.0, 0.1, thresholds=(0.3, 0.9), review_rate=0.5, review_margins=(0.05, 0.2))
    drawn = [(truth.anomalous, simulate_findings(truth, (120, 90), np.random.default_rng(seed), noise))
             for seed in range(60) for truth in (defect, normal)]
    thresholds = [f.threshold for _, f in drawn]
    assert 0.3 <= min(thresholds) < 0.4 and 0.8 < max(thresholds) <= 0.9
    assert all(f.anomalous == anomalous for anomalous, f in drawn)  # the score keeps its side of the threshold
    bands = [f for _, f in drawn if f.review_threshold is not None]
    assert 30 < len(bands) < 90
    assert all(0.045 <= f.threshold - f.review_threshold <= 0.205 for f in bands)  # both rounded to 0.01
    assert {f.verdict for _, f in drawn} == {"pass", "review", "fail"}
    assert any("review threshold" in f.block() for f in bands)
    with pytest.raises(ConfigError, match="findings.thresholds"):
        recipe_from_dict({"name": "x", "source": {"kind": "procedural"}, "findings": {"thresholds": [0.9, 0.3]}}, "recipe.yaml")


def test_weak_findings_land_in_the_review_band_with_a_region_as_weak_as_the_score():
    defect = ground_truth(*_sample(), ["scratch"])
    normal = ground_truth(*_sample(defect=False), [])
    noise = FindingsNoise(0.0, 0.0, 0.1, thresholds=(0.3, 0.9), review_rate=1.0, review_margins=(0.05, 0.2),
                          weak_rate=1.0)
    for seed in range(30):
        for truth in (defect, normal):
            found = simulate_findings(truth, (120, 90), np.random.default_rng(seed), noise)
            assert found.verdict == "review" and found.regions  # a normal part gets the spurious region shown
            strongest = found.regions[0]
            assert found.review_threshold * 0.95 <= strongest.peak_score <= found.image_score
            assert all(r.mean_score <= r.peak_score <= strongest.peak_score for r in found.regions)
    # sure findings put their regions on the threshold's scale: the strongest peaks near the score, on its side
    sure = simulate_findings(defect, (120, 90), np.random.default_rng(0), FindingsNoise(0.0, 0.0, 0.1, (0.8, 0.9)))
    assert sure.anomalous and sure.threshold <= sure.image_score <= sure.regions[0].peak_score
    with pytest.raises(ConfigError, match="findings.weak_rate"):
        recipe_from_dict({"name": "x", "source": {"kind": "procedural"}, "findings": {"weak_rate": 2}}, "recipe.yaml")


@pytest.mark.parametrize("defect", [True, False])
def test_a_review_part_is_answered_unsure_whatever_the_truth(defect):
    """In the REVIEW band the opener says the localizer is unsure and where to look; MMAD's forced
    choice says Yes (a region is shown); a text model gets no free follow-up deciding what it cannot see."""
    book = Phrasebook()
    truth = ground_truth(*_sample(defect), ["scratch"] if defect else [])
    region = truth.regions[0] if defect else regions_from_mask(_sample()[2])[0]
    unsure = Findings(0.31, 0.45, [replace(region, peak_score=0.3, mean_score=0.2)], 0.25)
    config = ConversationConfig(turns=(2, 3), grounding="findings", mmad_rate=0.5)
    openers = mmad = 0
    for seed in range(30):
        messages, intents = build_conversation(truth, unsure, "bottle", np.random.default_rng(seed), book, config)
        assert all(i in ("detect", "explain") or i.startswith("mmad_") for i in intents)
        assert all(i.startswith("mmad_") for i in intents[1:])
        answers = [m["content"][0]["text"] for m in messages if m["role"] == "assistant"]
        if not intents[0].startswith("mmad_"):
            openers += 1
            assert says_anomalous(answers[0]) is None and "0.31" in answers[0] and region.location in answers[0]
            assert not contradictions(answers[0], unsure)
        for intent, answer in zip(intents, answers):
            if intent == "mmad_detection":
                mmad += 1
                assert re.fullmatch(r"Yes[^()]*\([AB]\)", answer)
    assert openers and mmad


def test_kind_options_may_carry_size_words_with_the_measured_one_on_the_right_kind():
    book = Phrasebook()
    original, defective, mask = _sample()
    truth = ground_truth(original, defective, mask, ["stain"])
    region = replace(truth.regions[0], attributes=RegionAttributes(shape="compact", size="large", contrast="brighter", hue="none",
                                                                   texture="similar"))
    found = Findings(0.9, 0.5, [region])
    sized = 0
    for seed in range(60):
        asked = mmad_question("mmad_kind", truth, found, "bottle", np.random.default_rng(seed), book,
                              ConversationConfig())
        right = asked.options[asked.answer]
        assert "stain" in right and "small" not in right
        sized += "large" in right
    assert 5 < sized < 40


@pytest.mark.parametrize("defect", [True, False])
def test_conversations_answer_from_truth_and_render_through_a_chat_template(defect):
    book = Phrasebook()
    original, defective, mask = _sample(defect)
    truth = ground_truth(original, defective, mask, ["scratch"] if defect else [])
    tokenizer = tiny_chat_tokenizer()
    for seed in range(20):
        rng = np.random.default_rng(seed)
        findings = simulate_findings(truth, (120, 90), rng)
        messages, intents = build_conversation(truth, findings, "bottle", rng, book, ConversationConfig(turns=(2, 5)))
        assert intents[0] in ("detect", "explain") and len(intents) == (len(messages) - 1) // 2
        assert messages[0]["role"] == "system"
        assert messages[1]["content"][0] == {"type": "image"} and "<findings>" in messages[1]["content"][1]["text"]
        assert [m["role"] for m in messages[1:]] == ["user", "assistant"] * ((len(messages) - 1) // 2)
        answers = " ".join(m["content"][0]["text"] for m in messages if m["role"] == "assistant")
        if defect:
            assert "scratch" in answers or "bottom" in answers or "top right" in answers or "report" in answers.lower()
        else:
            assert "a scratch" not in answers and "defective" not in answers
        rendered = tokenizer.apply_chat_template(messages, tokenize=False)
        assert rendered.count("<image>") == 1 and rendered.count("<|assistant|>") == (len(messages) - 1) // 2
    first = messages[2]["content"][0]["text"]
    assert first.startswith("Yes") or "defective" in first or "not pass" in first if defect else first.startswith(("No", "It passes"))


def test_config_from_dict_names_the_key_and_the_fix():
    noise = from_dict(FindingsNoise, {"miss_rate": 0, "jitter": 0.2}, "recipe.yaml: findings")
    assert noise.miss_rate == 0.0 and isinstance(noise.miss_rate, float)
    with pytest.raises(ConfigError, match=r"recipe.yaml: findings: unknown key\(s\) 'miss'; allowed: miss_rate"):
        from_dict(FindingsNoise, {"miss": 0.1}, "recipe.yaml: findings")
    with pytest.raises(ConfigError, match=r"findings.jitter: expected float, got 'high'"):
        from_dict(FindingsNoise, {"jitter": "high"}, "findings")
    config = from_dict(ConversationConfig, {"turns": [1, 3]}, "conversation")
    assert config.turns == (1, 3)
    with pytest.raises(ConfigError, match="expected 2 items"):
        from_dict(ConversationConfig, {"turns": [1, 2, 3]}, "conversation")


def _free_answers(messages: list[dict]) -> str:
    return " ".join(m["content"][0]["text"] for m in messages if m["role"] == "assistant")


def test_explanations_cite_the_findings_score_and_are_asked_only_where_the_findings_are_right():
    book = Phrasebook()
    truth = ground_truth(*_sample(True), ["scratch"])
    found = Findings(0.81, 0.45, [r for r in truth.regions])
    missed = Findings(0.2, 0.45, [])
    explained = 0
    for seed in range(40):
        messages, intents = build_conversation(truth, found, "bottle", np.random.default_rng(seed), book,
                                               ConversationConfig(turns=(1, 1)))
        if intents == ["explain"]:
            explained += 1
            answer = _free_answers(messages)
            assert "0.81" in answer and "0.45" in answer and "scratch" in answer
            assert answer.startswith(("Yes", "It does not pass", "The bottle is defective"))
        missed_intents = build_conversation(truth, missed, "bottle", np.random.default_rng(seed), book,
                                            ConversationConfig(turns=(1, 1))).intents
        assert missed_intents == ["detect"]  # an explanation would cite 0.20 as the reason for a defect
    assert 10 <= explained <= 30
    good = ground_truth(*_sample(False), [])
    for seed in range(10):
        messages, intents = build_conversation(good, Findings(0.12, 0.45, []), "bottle", np.random.default_rng(seed),
                                               book, ConversationConfig(turns=(1, 1)))
        if intents == ["explain"]:
            answer = _free_answers(messages)
            assert "0.12" in answer and ("below" in answer or "under" in answer) and ("passes" in answer or "normal" in answer)


@pytest.mark.parametrize("grounding", ["image", "findings"])
def test_a_text_model_is_never_taught_to_overrule_findings_it_cannot_check(grounding):
    book = Phrasebook()
    truth = ground_truth(*_sample(True), ["scratch"])
    missed = Findings(0.2, 0.45, [])
    config = ConversationConfig(turns=(2, 3), grounding=grounding)
    for seed in range(20):
        messages, intents = build_conversation(truth, missed, "bottle", np.random.default_rng(seed), book, config)
        answers = _free_answers(messages)
        if grounding == "image":  # a VLM sees the scratch the localizer missed: the truth answers
            assert intents[0] == "detect" and "scratch" in answers
        else:  # only MMAD questions, which follow the findings: "No" to detection
            assert set(intents) == {"mmad_detection"} and "scratch" not in answers
            assert re.fullmatch(r"No[^()]*\([AB]\)", answers)
    with pytest.raises(ConfigError, match="grounding"):
        from_dict(ConversationConfig, {"grounding": "text"}, "conversation")
