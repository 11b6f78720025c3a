"""Recipes, the synthesis runner and its exports, end to end on images made in the test."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from datasets import load_from_disk
from PIL import Image
from scipy import ndimage

from anomaly_vlm.cli import main
from anomaly_vlm.errors import DatasetError
from anomaly_vlm.io import read_category
from anomaly_vlm.synth.export import save_dataset, save_llava, save_preview
from anomaly_vlm.synth.recipe import load_recipe
from anomaly_vlm.synth.runner import SAMPLES, find_sources, synthesize
from anomaly_vlm.synth.simulators import TOLERANCE
from anomaly_vlm.synth.textures import procedural_normal

from .conftest import RECIPES
from .synthetic import tiny_chat_tokenizer

SIZE = 96


def _normal_folder(root: Path, kind: str, count: int = 4) -> Path:
    for i in range(count):
        image = procedural_normal(np.random.default_rng(100 + i), SIZE, kind)
        root.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> Path:
    """An MVTec-style category root of drawn parts: widget/train/good/*.png."""
    return _normal_folder(tmp_path_factory.mktemp("parts") / "widget" / "train" / "good", "object").parent.parent


def _recipe_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def _small(recipe_path: Path, source: Path | None, num: int = 8, seed: int = 0, **changes):
    recipe = load_recipe(recipe_path, num=num, seed=seed, source_path=source)
    recipe.source.image_size = SIZE
    for key, value in changes.items():
        setattr(recipe, key, value)
    return recipe


def _read_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.relative_to(out).parts[0] not in ("dataset", "manifest.json")}


@pytest.mark.parametrize("name", sorted(p.stem for p in RECIPES.glob("*.yaml")))
def test_each_bundled_recipe_runs_and_its_dataset_loads(name, tmp_path):
    recipe_path = RECIPES / f"{name}.yaml"
    source = yaml.safe_load(recipe_path.read_text())["source"]
    folder = _normal_folder(tmp_path / "normal", source["content"]) if source["kind"] == "folder" else None
    recipe = _small(recipe_path, folder, num=10)
    out = tmp_path / "out"
    result = synthesize(recipe, out, progress=False)
    assert result.failures == [] and result.drawn == 10 and len(result.records) == 10
    save_dataset(out, result.records)
    dataset = load_from_disk(str(out / "dataset"))
    assert len(dataset) == 10
    assert {"images", "messages", "mask", "findings", "defect_types"} <= set(dataset.column_names)
    tokenizer = tiny_chat_tokenizer()
    for row, record in zip(dataset, result.records):
        assert row["id"] == record["id"] and row["defect_types"] == record["defect_types"]
        image, mask = row["images"][0], np.asarray(row["mask"])
        assert image.size == mask.shape[::-1] == tuple(record["size"])
        assert bool(mask.any()) == bool(row["label"]) == bool(row["defect_types"])
        rendered = tokenizer.apply_chat_template(row["messages"], tokenize=False)
        assert rendered.count("<image>") == 1 and "<findings>" in rendered
        low, high = recipe.findings.thresholds
        assert low - 1e-9 <= row["findings"]["threshold"] <= high + 1e-9


def test_masks_are_the_changed_pixels_and_boxes_their_components(parts, tmp_path):
    recipe = _small(RECIPES / "objects.yaml", parts, num=12, normal_ratio=0.25, defects_per_image=(1, 3))
    out = tmp_path / "out"
    records = synthesize(recipe, out, progress=False).records
    assert {r["label"] for r in records} == {0, 1}
    for record in records:
        normal = np.asarray(Image.open(record["source"]).convert("RGB")).astype(int)
        image = np.asarray(Image.open(out / record["image"])).astype(int)
        changed = np.abs(image - normal).max(axis=2)
        if not record["label"]:
            assert record["mask"] is None and changed.max() == 0
            continue
        mask = np.asarray(Image.open(out / record["mask"])) > 127
        assert (changed[~mask] == 0).all() and (changed[mask] > TOLERANCE).all()
        labels, _ = ndimage.label(mask, structure=np.ones((3, 3)))
        boxes = sorted((s[1].start, s[0].start, s[1].stop, s[0].stop) for s in ndimage.find_objects(labels))
        assert sorted(tuple(r["box"]) for r in record["ground_truth"]["regions"]) == boxes
        assert record["ground_truth"]["area_fraction"] == pytest.approx(mask.mean(), abs=1e-6)


def test_same_seed_same_output_for_any_worker_count(parts, tmp_path):
    recipe = _small(RECIPES / "objects.yaml", parts, num=8, seed=3)
    synthesize(recipe, tmp_path / "one", workers=1, progress=False)
    synthesize(recipe, tmp_path / "two", workers=2, progress=False)
    one, two = _read_files(tmp_path / "one"), _read_files(tmp_path / "two")
    assert one == two and len(one) > 8
    other = _small(RECIPES / "objects.yaml", parts, num=8, seed=4)
    synthesize(other, tmp_path / "other", progress=False)
    assert _read_files(tmp_path / "other") != one


def test_an_interrupted_run_resumes_and_a_different_recipe_is_refused(parts, tmp_path):
    out = tmp_path / "out"
    first = synthesize(_small(RECIPES / "objects.yaml", parts, num=4), out, progress=False)
    assert first.drawn == 4
    (out / SAMPLES / "000002.json").unlink()   # as if killed before sample 2 was complete
    resumed = synthesize(_small(RECIPES / "objects.yaml", parts, num=6), out, progress=False)
    assert resumed.drawn == 3 and len(resumed.records) == 6
    synthesize(_small(RECIPES / "objects.yaml", parts, num=6), tmp_path / "fresh", progress=False)
    assert _read_files(out) == _read_files(tmp_path / "fresh")
    with pytest.raises(DatasetError, match="another recipe or seed"):
        synthesize(_small(RECIPES / "objects.yaml", parts, num=6, seed=9), out, progress=False)


def test_an_unreadable_source_fails_its_samples_only(tmp_path):
    folder = _normal_folder(tmp_path / "normal", "object", count=2)
    (folder / "broken.png").write_bytes(b"not a png")
    result = synthesize(_small(RECIPES / "objects.yaml", folder, num=12), tmp_path / "out", progress=False)
    assert result.failures and all("broken.png" in f["error"] for f in result.failures)
    assert len(result.records) + len(result.failures) == 12 and result.records


def test_output_is_an_mvtec_category_and_a_llava_set(parts, tmp_path):
    out = tmp_path / "out"
    records = synthesize(_small(RECIPES / "objects.yaml", parts, num=10), out, progress=False).records
    assert {r["category"] for r in records} == {"widget"} and records[0]["object"] == "widget"
    samples = {s.path.stem: s for s in read_category(out / "widget")}
    for record in records:
        sample = samples[record["id"]]
        assert sample.label == record["label"]
        assert (sample.mask_path is not None) == bool(record["label"])
    entries = json.loads(save_llava(out, records).read_text())
    assert [e["id"] for e in entries] == [r["id"] for r in records]
    for entry in entries:
        turns = entry["conversations"]
        assert turns[0]["value"].startswith("<image>\n<findings>")
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert (out / entry["image"]).is_file()
    sheet = Image.open(save_preview(out, records, count=6, side=64))
    assert sheet.size == (4 * 64, 2 * (64 + 22))


def test_find_sources_reads_category_dataset_and_plain_folders(parts, tmp_path):
    assert {s.category for s in find_sources(parts)} == {"widget"}
    assert {s.category for s in find_sources(parts / "train" / "good")} == {"widget"}
    assert len(find_sources(parts.parent)) == 4
    plain = _normal_folder(tmp_path / "My Parts", "object", count=2)
    assert {s.category for s in find_sources(plain)} == {"my_parts"}
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="empty: no images"):
        find_sources(empty)


@pytest.mark.parametrize("text,message", [
    ("source: {kind: folder}\n", "source.path is needed"),
    ("sourse: {}\n", "unknown key\\(s\\) 'sourse'"),
    ("source: {kind: procedural}\nsimulators: {sparkle: {}}\n", "unknown defect simulator 'sparkle'"),
    ("source: {kind: procedural}\nsimulators: {scratch: {config: {length: [0.5, 0.1]}}}\n", "'length' is a \\(low, high\\) range"),
    ("source: {kind: procedural}\nnormal_ratio: 1.5\n", "normal_ratio must lie in"),
    ("source: {kind: procedural, image_size: big}\n", "recipe.source.image_size: expected int"),
    ("source: [1, 2]\n", "recipe.source: expected a mapping"),
    ("source: {kind: procedural}\ndefects_per_image: [3, 1]\n", "defects_per_image"),
    ("source: {kind: procedural\n", "not valid YAML"),
])
def test_bad_recipes_name_the_file_and_the_key(tmp_path, text, message):
    path = _recipe_file(tmp_path, text)
    with pytest.raises(DatasetError, match=message) as error:
        load_recipe(path)
    assert str(path) in str(error.value)


def test_recipe_paths_are_relative_to_the_recipe_file(tmp_path):
    path = _recipe_file(tmp_path, "source: {path: photos}\ntextures: ../dtd\n")
    recipe = load_recipe(path)
    assert recipe.source.path == str((tmp_path / "photos").resolve())
    assert recipe.textures == str((tmp_path.parent / "dtd").resolve())


def test_cli_synth_writes_dataset_llava_and_preview(parts, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["synth", "--recipe", str(RECIPES / "objects.yaml"), "--source", str(parts), "--out", str(out),
            "--num", "5", "--workers", "1", "--preview"]
    assert main(argv) == 0
    assert "5 samples" in capsys.readouterr().out
    assert len(load_from_disk(str(out / "dataset"))) == 5
    assert (out / "llava.json").is_file() and Image.open(out / "preview.png").size[0] == 4 * 256
    assert main(argv) == 0
    assert "0 drawn now, 5 already on disk" in capsys.readouterr().out
    assert main(["synth", "--recipe", str(tmp_path / "missing.yaml"), "--out", str(out)]) == 2
