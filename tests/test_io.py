import numpy as np
import pytest
from PIL import Image

from anomaly_vlm.errors import DatasetError, ImageLoadError
from anomaly_vlm.io import ImageLimits, collect_samples, load_image, read_category, read_dataset, read_folder

from .synthetic import make_category


def test_read_category_with_masks(dataset_root):
    samples = read_category(dataset_root / "widget")
    assert len(samples) == 12
    defects = [s for s in samples if s.label == 1]
    assert all(s.mask_path and s.mask_path.name.endswith("_mask.png") for s in defects)
    assert all(s.pixel_truth for s in samples)
    assert {s.defect for s in samples} == {"good", "stain"}
    assert samples[0].key == "widget__test__good__000"


def test_category_without_ground_truth_gives_labels_only(dataset_root):
    samples = read_category(dataset_root / "gadget")
    assert {s.label for s in samples} == {0, 1}
    assert not any(s.pixel_truth or s.mask_path for s in samples)


def test_dataset_root_reads_categories(dataset_root):
    assert {s.category for s in read_dataset(dataset_root)} == {"widget", "gadget"}
    assert {s.category for s in read_dataset(dataset_root, ["gadget"])} == {"gadget"}
    with pytest.raises(DatasetError, match="categories not found: nope"):
        read_dataset(dataset_root, ["nope"])


def test_visa_style_mask_names(tmp_path):
    category = make_category(tmp_path, "pcb", normal=1, defective=2)
    for mask in (category / "ground_truth" / "stain").iterdir():
        mask.rename(mask.with_name(mask.name.replace("_mask", "")))
    assert all(s.mask_path for s in read_category(category) if s.label)


def test_missing_mask_is_named(tmp_path):
    category = make_category(tmp_path, "widget", normal=1, defective=2)
    (category / "ground_truth" / "stain" / "001_mask.png").unlink()
    with pytest.raises(DatasetError, match=r"001\.png: no mask.*001_mask\.png"):
        read_category(category)


def test_collect_samples_mixes_files_folders_and_categories(tmp_path, dataset_root):
    plain = tmp_path / "plain"
    plain.mkdir()
    Image.new("RGB", (8, 8)).save(plain / "a.png")
    Image.new("RGB", (8, 8)).save(plain / "b.jpg")
    (plain / "notes.txt").write_text("x")
    samples = collect_samples([plain, dataset_root / "widget", plain / "a.png"])
    assert len(samples) == 2 + 12 + 1
    assert [s.label for s in read_folder(plain)] == [None, None]
    with pytest.raises(DatasetError, match="no such file or folder"):
        collect_samples([tmp_path / "missing"])


def test_load_image_modes_and_exif(tmp_path):
    grey16 = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    Image.fromarray(grey16).save(tmp_path / "deep.png")
    loaded = load_image(tmp_path / "deep.png")
    assert loaded.mode == "RGB" and 0 < np.asarray(loaded).max() <= 255 and np.asarray(loaded).min() == 0
    Image.new("RGBA", (4, 4), (255, 0, 0, 128)).save(tmp_path / "alpha.png")
    assert load_image(tmp_path / "alpha.png").mode == "RGB"
    Image.new("P", (4, 4)).save(tmp_path / "palette.png")
    assert load_image(tmp_path / "palette.png").mode == "RGB"
    rotated = Image.new("RGB", (40, 20))
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    rotated.save(tmp_path / "rotated.jpg", exif=exif)
    assert load_image(tmp_path / "rotated.jpg").size == (20, 40)


def test_bad_images_give_clear_errors(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    Image.new("RGB", (64, 64)).save(tmp_path / "whole.png")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "whole.png").read_bytes()[:60])
    Image.new("RGB", (200, 200)).save(tmp_path / "big.png")
    cases = {"empty.png": "empty", "text.png": "not a readable image", "truncated.png": "corrupt or truncated",
             "missing.png": "no such file"}
    for name, reason in cases.items():
        with pytest.raises(ImageLoadError, match=reason) as info:
            load_image(tmp_path / name)
        assert name in str(info.value)
    with pytest.raises(ImageLoadError, match="over the limit"):
        load_image(tmp_path / "big.png", ImageLimits(max_pixels=100 * 100))


def test_shared_bottle_category_reads_labels_only():
    from .conftest import SHARED_DATA

    bottle = SHARED_DATA / "mvtec_bottle" / "bottle"
    if not bottle.is_dir():
        pytest.skip("shared MVTec bottle data not present")
    samples = read_category(bottle)
    assert len(samples) == 83
    assert sum(s.label == 0 for s in samples) == 20
    assert not any(s.pixel_truth for s in samples)
    assert len(read_category(bottle, "train")) == 30
