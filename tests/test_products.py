"""Product profiles: the store's add/list/load/remove, banks that score as fitted, and refusals."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from anomaly_vlm.errors import CheckpointError, ProductError
from anomaly_vlm.localizer import ReferenceConfig, ReferenceScorer, build_feature_source
from anomaly_vlm.products import ProductProfile, ProductStore, default_home

from .synthetic import assert_same_scorer, textured_image

SIZE = 64
SOURCE = build_feature_source("builtin", image_size=SIZE, grid_size=16)
GOOD = ["good/000.png", "good/001.png", "good/002.png"]
THRESHOLDS = {"review": 0.42, "fail": 0.7, "source": "leave-one-out at 1% false alarms"}


def _part(seed: int, blemish: bool = False) -> Image.Image:
    array = textured_image(np.random.default_rng(seed), SIZE)
    if blemish:
        array[20:32, 30:42] = (230, 60, 40)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def bank() -> ReferenceScorer:
    config = ReferenceConfig(neighbourhoods=(1, 3), augmentations=("hflip",))
    return ReferenceScorer(SOURCE, config, progress=False).fit([_part(seed) for seed in range(3)])


@pytest.fixture
def store(tmp_path, monkeypatch) -> ProductStore:
    monkeypatch.setenv("ANOMALY_VLM_HOME", str(tmp_path / "home"))
    return ProductStore()


def test_add_list_load_remove_round_trip(store, bank, tmp_path):
    profile = store.add("bracket-7", {"builtin": bank}, THRESHOLDS, GOOD, ["bad/000.png"], notes="scratches on the rim matter")
    folder = tmp_path / "home" / "products" / "bracket-7"
    assert profile.folder == folder and sorted(p.name for p in folder.iterdir()) == ["bank-builtin.safetensors", "profile.json"]
    assert profile.features == ["builtin"] and profile.counts == {"good": 3, "defective": 1}
    assert profile.thresholds == THRESHOLDS and profile.reference_digest == bank.references_digest
    assert profile.created.endswith("+00:00")
    loaded = store.load("bracket-7")
    assert loaded == profile and ProductProfile.from_dict(json.loads(json.dumps(loaded.to_dict()))) == profile
    assert [p.name for p in store.list()] == ["bracket-7"] and store.exists("bracket-7")
    store.remove("bracket-7")
    assert not store.exists("bracket-7") and store.list() == [] and list(store.root.iterdir()) == []
    with pytest.raises(ProductError, match="no product 'bracket-7'"):
        store.remove("bracket-7")


def test_list_is_sorted_and_unknown_names_list_the_known(store, bank):
    for name in ("valve", "Axle", "cap"):
        store.add(name, {"builtin": bank}, THRESHOLDS, GOOD)
    assert [p.name for p in store.list()] == ["Axle", "cap", "valve"]
    with pytest.raises(ProductError, match="known: Axle, cap, valve"):
        store.load("gear")


def test_scorer_from_the_store_scores_like_the_fitted_bank(store, bank):
    store.add("bracket", {"builtin": bank}, THRESHOLDS, GOOD)
    loaded = store.scorer("bracket", SOURCE, progress=False)
    assert_same_scorer(loaded, bank, [_part(10), _part(11, blemish=True)])


@pytest.mark.parametrize("name", ["", ".hidden", "..", "a/b", "../up", "a b", "x" * 65, "dé", "ok\n", "tab\t"])
def test_bad_names_are_refused(store, bank, name):
    with pytest.raises(ProductError, match="invalid product name.*not starting with '.'"):
        store.add(name, {"builtin": bank}, THRESHOLDS, GOOD)
    with pytest.raises(ProductError, match="invalid product name"):
        store.load(name)


@pytest.mark.parametrize("name", ["A-1_b.c", "x" * 64, "7", "-dash"])
def test_good_names_are_taken(store, bank, name):
    assert store.add(name, {"builtin": bank}, THRESHOLDS, GOOD).name == name and store.exists(name)


def test_duplicate_add_is_refused_and_replace_swaps(store, bank):
    store.add("bracket", {"builtin": bank}, THRESHOLDS, GOOD)
    with pytest.raises(ProductError, match="already exists.*product remove bracket.*replace"):
        store.add("bracket", {"builtin": bank}, {"fail": 0.9}, GOOD)
    assert store.load("bracket").thresholds == THRESHOLDS
    store.add("bracket", {"builtin": bank}, {"fail": 0.9}, GOOD, notes="new recipe", replace=True)
    assert store.load("bracket").thresholds == {"fail": 0.9} and store.load("bracket").notes == "new recipe"
    assert [p.name for p in store.root.iterdir()] == ["bracket"]  # no temporaries or old copy left


def test_a_failed_add_leaves_nothing(store, bank, monkeypatch):
    monkeypatch.setattr(ReferenceScorer, "state", lambda self: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        store.add("bracket", {"builtin": bank}, THRESHOLDS, GOOD)
    assert list(store.root.iterdir()) == []


def test_missing_feature_bank_is_named(store, bank):
    store.add("bracket", {"builtin": bank}, THRESHOLDS, GOOD)
    with pytest.raises(ProductError, match="no bank for the 'clip' feature source \\(it has: builtin\\).*--replace"):
        store.scorer("bracket", SimpleNamespace(name="clip"))


def test_built_in_features_are_rebuilt_at_the_banks_resolution_and_grid(store, bank):
    """A product fitted with --builtin-grid 16 scores at grid 16 whatever the options of the day say."""
    store.add("bracket", {"builtin": bank}, THRESHOLDS, GOOD)
    loaded = store.scorer("bracket", build_feature_source("builtin"), progress=False)  # the defaults: 256 px, grid 32
    assert loaded.source.describe() == SOURCE.describe() and loaded.grid == bank.grid
    assert_same_scorer(loaded, bank, [_part(10), _part(11, blemish=True)])


def test_add_refuses_inconsistent_inputs(store, bank):
    with pytest.raises(ProductError, match="holds 3 references but 2 good image paths"):
        store.add("bracket", {"builtin": bank}, THRESHOLDS, GOOD[:2])
    with pytest.raises(ProductError, match="'clip' uses the 'builtin' feature source"):
        store.add("bracket", {"clip": bank}, THRESHOLDS, GOOD)
    with pytest.raises(ProductError, match="JSON-able"):
        store.add("bracket", {"builtin": bank}, {"fail": object()}, GOOD)
    assert not store.root.exists() or list(store.root.iterdir()) == []


def test_a_corrupt_profile_does_not_break_list(store, bank):
    store.add("good-part", {"builtin": bank}, THRESHOLDS, GOOD)
    store.add("broken", {"builtin": bank}, THRESHOLDS, GOOD)
    store.add("wrong-fields", {"builtin": bank}, THRESHOLDS, GOOD)
    (store.root / "broken" / "profile.json").write_text("{not json")
    (store.root / "wrong-fields" / "profile.json").write_text(json.dumps({"format_version": 1, "name": "wrong-fields"}))
    (store.root / "stray-folder").mkdir()
    assert [p.name for p in store.list()] == ["good-part"]
    with pytest.raises(ProductError, match="unreadable product profile"):
        store.load("broken")
    with pytest.raises(ProductError, match="malformed product profile"):
        store.load("wrong-fields")
    store.remove("broken")
    assert not (store.root / "broken").exists()


def test_a_corrupt_bank_file_is_reported(store, bank):
    store.add("bracket", {"builtin": bank}, THRESHOLDS, GOOD)
    (store.root / "bracket" / "bank-builtin.safetensors").write_bytes(b"\x80\x04 pickle? no")
    with pytest.raises(ProductError, match="unreadable reference bank"):
        store.scorer("bracket", SOURCE)


def test_default_home_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ANOMALY_VLM_HOME", str(tmp_path / "avh"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_home() == tmp_path / "avh" and ProductStore().root == tmp_path / "avh" / "products"
    monkeypatch.delenv("ANOMALY_VLM_HOME")
    assert default_home() == tmp_path / "xdg" / "anomaly_vlm"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert default_home() == tmp_path / "user" / ".local" / "share" / "anomaly_vlm"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_home() == Path(tmp_path / "user" / ".local" / "share" / "anomaly_vlm")
    assert ProductStore(tmp_path / "explicit").root == tmp_path / "explicit" / "products"
