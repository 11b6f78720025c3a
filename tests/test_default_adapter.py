"""Which adapter the embedded assistant answers with (none, a folder, or a default one), and the MMAD turns of the
synthesized instruction data."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest
import yaml

from anomaly_vlm.assistant.backends import (DEFAULT_ADAPTER, AssistantOptions, adapter_identity, describe_assistant,
                                            load_model, resolve_adapter)
from anomaly_vlm.configs import ConfigError
from anomaly_vlm.mmad_questions import MMADQuestion, load_phrasing, parse_letter, phrase_question
from anomaly_vlm.synth.notes import ProductNotes
from anomaly_vlm.synth.conversations import (MMAD_INTENTS, ConversationConfig, Phrasebook, flagged,
                                             build_conversation, plain_look)
from anomaly_vlm.synth.recipe import load_recipe
from anomaly_vlm.synth.runner import Synthesizer
from anomaly_vlm.types import Findings
from anomaly_vlm.vocabulary import LOCATIONS

from .assistant_models import tiny_text_model

REPO = DEFAULT_ADAPTER.parents[2]

_OPTION = re.compile(r"^- (.*) \(([A-Z])\)$")


# ---------------------------------------------------------------- which adapter loads

def test_the_default_adapter_resolves_only_for_the_embedded_model(tmp_path):
    shipped = tmp_path / "default"
    shipped.mkdir()
    (shipped / "adapter_model.safetensors").write_bytes(b"")
    other = str(tmp_path / "mine")
    assert resolve_adapter(AssistantOptions(), default=shipped) == shipped
    for spec in ("none", "None", "NONE", " none "):
        assert resolve_adapter(AssistantOptions(adapter=spec), default=shipped) is None
    assert str(resolve_adapter(AssistantOptions(adapter=other), default=shipped)) == other
    assert resolve_adapter(AssistantOptions(model="some/model"), default=shipped) is None
    assert resolve_adapter(AssistantOptions(backend="vlm"), default=shipped) is None
    assert resolve_adapter(AssistantOptions(), for_training=True, default=shipped) is None  # tune starts bare
    assert resolve_adapter(AssistantOptions(), default=tmp_path / "absent") is None
    shipped_here = (DEFAULT_ADAPTER / "adapter_model.safetensors").is_file()
    assert resolve_adapter(AssistantOptions()) == (DEFAULT_ADAPTER if shipped_here else None)


def test_the_shipped_adapter_is_small_licence_clean_and_packaged():
    import tomllib

    from safetensors import safe_open

    weights = DEFAULT_ADAPTER / "adapter_model.safetensors"
    assert weights.is_file() and weights.stat().st_size <= 8 * 2**20
    info = json.loads((DEFAULT_ADAPTER / "adapter.json").read_text())
    assert info["name"] == "anomaly-vlm-default" and info["version"]
    assert info["command"] == "bash benchmarks/train_default_adapter.sh" and "procedural" in info["licence"]
    recipe = yaml.safe_load((REPO / info["recipe"]).read_text())
    assert recipe["source"]["kind"] == "procedural" and recipe["seed"] == info["recipe_seed"]
    assert info["training_data"]["samples"] == recipe["num"]
    config = json.loads((DEFAULT_ADAPTER / "adapter_config.json").read_text())
    assert config["r"] == info["lora"]["rank"] and config["base_model_name_or_path"].endswith("SmolLM2-135M-Instruct")
    with safe_open(str(weights), framework="pt") as tensors:
        assert all("lora_" in key for key in tensors.keys())
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["anomaly_vlm"]
    assert {"adapters/default/*.json", "adapters/default/*.safetensors"} <= set(data)


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    """A tiny base model folder and an adapter for it with an adapter.json."""
    from peft import LoraConfig

    from anomaly_vlm.assistant.adapters import add_adapter

    root = tmp_path_factory.mktemp("tiny")
    model, tokenizer = tiny_text_model()
    model.save_pretrained(str(root / "base"), safe_serialization=True)
    tokenizer.save_pretrained(str(root / "base"))
    add_adapter(tiny_text_model()[0], LoraConfig(r=2, lora_alpha=4)).save_pretrained(str(root / "adapter"))
    (root / "adapter" / "adapter.json").write_text(json.dumps({"name": "line-7", "version": "2.0.1"}))
    return root


def test_every_description_names_the_adapter(tiny_folders):
    base, adapter = str(tiny_folders / "base"), str(tiny_folders / "adapter")
    _, _, info = load_model(AssistantOptions(model=base, adapter=adapter, device="cpu", precision="fp32"))
    assert info["adapter"] == {"name": "line-7", "version": "2.0.1", "path": adapter}
    assert "+ adapter line-7 2.0.1" in describe_assistant(info)
    merged, _, bare = load_model(AssistantOptions(model=base, adapter="none", device="cpu", precision="fp32"))
    assert "adapter" not in bare and "+ adapter" not in describe_assistant(bare)
    _, _, plain = load_model(AssistantOptions(model=base, device="cpu", precision="fp32"))
    assert "adapter" not in plain   # another model than the embedded one: no default adapter


def test_an_adapter_without_adapter_json_is_named_by_its_folder(tmp_path):
    assert adapter_identity(tmp_path) == {"name": tmp_path.name, "version": None, "path": str(tmp_path)}


# ---------------------------------------------------------------- MMAD turns in the training data

def _parse(text: str) -> tuple[str, dict[str, str]]:
    question = re.search(r"^Question: (.*)$", text, re.M).group(1)
    options = {m.group(2): m.group(1) for m in map(_OPTION.match, text.splitlines()) if m}
    return question, options


def _mmad_turns(record_messages: list[dict], intents: list[str]):
    users = [m for m in record_messages if m["role"] == "user"]
    answers = [m for m in record_messages if m["role"] == "assistant"]
    for turn, (intent, user, answer) in enumerate(zip(intents, users, answers)):
        if intent in MMAD_INTENTS:
            yield turn, intent, user["content"][-1]["text"], answer["content"][0]["text"]


def _check_turn(intent: str, text: str, answer: str, findings: Findings, prompts: dict) -> None:
    question, options = _parse(text)
    letter = parse_letter(answer, options)
    assert letter is not None and re.fullmatch(r".+ \([A-Z]\)", answer), answer
    assert len(set(options.values())) == len(options) >= 2
    # exactly the prompt eval-mmad builds (prompts/mmad.yaml), for some template count
    phrased = [phrase_question(MMADQuestion(question, options, letter, "?"), prompts, n) for n in range(6)]
    assert any(text.endswith(p) for p in phrased), text
    chosen = options[letter]
    strongest = findings.regions[0] if findings.regions else None
    if intent == "mmad_detection":
        assert len(options) == 2 and chosen.lower().startswith("yes" if flagged(findings) else "no")
    elif intent == "mmad_location":
        assert flagged(findings) and strongest.location in chosen
        proposed = {r.location for r in findings.regions}
        for other in options.values():   # no distractor names a proposed place
            if other != chosen:
                named = [w for w in sorted(LOCATIONS, key=len, reverse=True) if w in other][0]
                assert named not in proposed
    elif intent == "mmad_appearance":
        assert flagged(findings) and chosen in (strongest.looks(), plain_look(strongest.attributes))
    elif intent == "mmad_kind":
        assert flagged(findings) and strongest.attributes is not None
    elif intent == "mmad_product":   # the notes name the answer and no other option
        named = [text for text in options.values() if text.split(" ", 1)[1] in findings.notes.lower()]
        assert named == [chosen], (findings.notes, options)


def test_synthesized_mmad_turns_follow_the_findings_block():
    recipe = load_recipe(REPO / "data_recipes" / "assistant_adapter.yaml", num=60)
    recipe.source = replace(recipe.source, image_size=96)
    recipe.conversation = replace(recipe.conversation, mmad_rate=0.8, turns=(2, 4))
    recipe.findings = replace(recipe.findings, miss_rate=0.3)
    synthesizer, prompts = Synthesizer(recipe), load_phrasing()
    seen, disagreeing, reviewed = set(), 0, 0
    for index in range(recipe.num):
        record = synthesizer.draw(index).record
        findings = Findings.from_dict(record["findings"])
        first = record["messages"][1]["content"][-1]["text"]
        assert first.startswith(findings.block())
        turns = list(_mmad_turns(record["messages"], record["intents"]))
        if findings.verdict == "review":   # an unsure opener at most, then only MMAD's questions
            reviewed += 1
            free = [i for i in record["intents"] if i not in MMAD_INTENTS]
            assert free in ([], record["intents"][:1])
        elif findings.anomalous != bool(record["label"]):
            disagreeing += 1   # all MMAD or all free: free answers follow the ground truth
            assert not turns or len(turns) == len(record["intents"])
        for turn, intent, text, answer in turns:
            seen.add(intent)
            _check_turn(intent, text, answer, findings, prompts)
            if turn == 0:
                assert text.startswith(findings.block() + "\n\n")
    assert {"mmad_detection", "mmad_location", "mmad_appearance", "mmad_kind", "mmad_product"} <= seen
    assert disagreeing > 0 and reviewed > 0


def test_product_notes_name_the_product_and_often_the_true_kind():
    from .test_synth_data import _sample
    from anomaly_vlm.synth.notes import TRUE_KIND_IN_NOTES, draw_notes
    from anomaly_vlm.synth.ground_truth import ground_truth

    book = Phrasebook()
    truth = ground_truth(*_sample(True), ["scratch"])
    config = ConversationConfig(notes_rate=0.5)
    drawn = [draw_notes(truth, "part", np.random.default_rng(seed), book, config) for seed in range(400)]
    notes = [n for n in drawn if n is not None]
    assert 150 < len(notes) < 250                      # about half the findings carry notes
    products = {one for one, _ in book.products}
    assert all(n.product in products for n in notes) and len({n.product for n in notes}) > 10
    assert all(n.product.split(" ", 1)[1] in n.text.lower() for n in notes)
    with_kinds = [n for n in notes if n.kinds]
    true_named = sum("scratch" in n.kinds for n in with_kinds) / len(with_kinds)
    assert abs(true_named - TRUE_KIND_IN_NOTES) < 0.15   # evidence, not the answer key
    for n in with_kinds:   # each kind is named in the text by the name the notes hold for it
        for kind, name in n.kinds.items():
            assert name in dict(book.kind_names[kind])
            assert dict(book.kind_names[kind])[name] in n.text.lower()
    assert len({n.kinds["scratch"] for n in with_kinds if "scratch" in n.kinds}) > 1   # not only its own name
    named = draw_notes(truth, "bottle", np.random.default_rng(0), book, ConversationConfig(notes_rate=1.0))
    assert named.product == "a bottle" and "bottle" in named.text.lower()
    assert draw_notes(truth, "bottle", np.random.default_rng(0), book, ConversationConfig()) is None
    with pytest.raises(ConfigError, match="conversation.notes_rate"):
        ConversationConfig(notes_rate=2.0)


def test_a_missed_defect_is_answered_no_and_product_questions_need_notes_naming_the_product():
    from .test_synth_data import _sample
    from anomaly_vlm.synth.ground_truth import ground_truth

    book, prompts = Phrasebook(), load_phrasing()
    truth = ground_truth(*_sample(True), ["scratch"])
    config = ConversationConfig(turns=(3, 3), mmad_rate=1.0)
    kinds = set()
    for seed in range(30):
        for notes in (None, ProductNotes("a bottle", "Each image shows a bottle.")):
            missed = Findings(0.2, 0.5, [], notes=notes and notes.text)
            messages, intents = build_conversation(truth, missed, "part", np.random.default_rng(seed), book, config,
                                                   notes)
            assert set(intents) <= {"mmad_detection", "mmad_product"}
            assert ("mmad_product" in intents) <= (notes is not None)
            kinds |= set(intents)
            for _, intent, text, answer in _mmad_turns(messages, intents):
                _check_turn(intent, text, answer, missed, prompts)
                if intent == "mmad_product":
                    assert _parse(text)[1][parse_letter(answer, _parse(text)[1])] == "a bottle"
    assert kinds == {"mmad_detection", "mmad_product"}


def test_no_mmad_rate_keeps_the_conversations_and_the_rate_is_checked():
    from .test_synth_data import _sample
    from anomaly_vlm.synth.findings import simulate_findings
    from anomaly_vlm.synth.ground_truth import ground_truth

    book = Phrasebook()
    truth = ground_truth(*_sample(True), ["scratch"])
    findings = simulate_findings(truth, (120, 90), np.random.default_rng(3))
    plain = build_conversation(truth, findings, "bottle", np.random.default_rng(1), book, ConversationConfig())
    assert not set(plain.intents) & set(MMAD_INTENTS)
    for bad in ({"mmad_rate": 1.5}, {"mmad_rate": -0.1}, {"mmad_options": (1, 4)}, {"mmad_options": (5, 3)}):
        with pytest.raises(ConfigError, match="conversation.mmad"):
            ConversationConfig(**bad)


def test_a_kind_the_notes_name_is_offered_under_their_name():
    from .test_synth_data import _sample
    from anomaly_vlm.synth.conversations import mmad_question
    from anomaly_vlm.synth.findings import simulate_findings
    from anomaly_vlm.synth.ground_truth import ground_truth

    book = Phrasebook()
    normal, image, mask = _sample(True)
    truth = ground_truth(normal, image, mask, ["missing material"])
    findings = simulate_findings(truth, image.shape[1::-1], np.random.default_rng(0), image=image, mask=mask)
    notes = ProductNotes("a glass jar", "Glass jars. Chips and stains are the usual defects.",
                         {"missing material": "a chip", "stain": "a stain"})
    rivals = 0
    for seed in range(40):
        asked = mmad_question("mmad_kind", truth, findings, "part", np.random.default_rng(seed), book,
                              ConversationConfig(), notes)
        assert asked.options[asked.answer] in ("a chip", "chip")
        assert not {"missing material", "material"} & set(asked.options.values())
        rivals += bool({"a stain", "stain"} & set(asked.options.values()))
    # the notes' other kind is a usual distractor (one of ~16 otherwise), never always there
    assert 0.4 < rivals / 40 < 0.85
    plain = mmad_question("mmad_kind", truth, findings, "part", np.random.default_rng(0), book, ConversationConfig())
    assert plain.options[plain.answer] == "missing material"


def test_free_answers_name_the_product_and_the_kind_by_the_notes_words():
    from .test_synth_data import _sample
    from anomaly_vlm.synth.findings import simulate_findings
    from anomaly_vlm.synth.ground_truth import ground_truth

    book = Phrasebook()
    normal, image, mask = _sample(True)
    truth = ground_truth(normal, image, mask, ["missing material"])
    findings = simulate_findings(truth, image.shape[1::-1], np.random.default_rng(0), image=image, mask=mask)
    notes = ProductNotes("a glass jar", "Glass jars. Chips are the usual defect.", {"missing material": "a chip"})
    config = ConversationConfig(turns=(3, 3))
    answers = []
    for seed in range(20):
        messages, _ = build_conversation(truth, findings, "part", np.random.default_rng(seed), book, config, notes)
        answers += [m["content"][-1]["text"] for m in messages if m["role"] == "assistant"]
    free = " ".join(answers).lower()
    assert "a chip" in free and "glass jar" in free
    assert "missing material" not in free and "the part is" not in free
