"""Hostile and unusual image files: every reader gives a per-file error and finishes the good ones."""

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomaly_vlm.cli import main
from anomaly_vlm.errors import ImageLoadError
from anomaly_vlm.io import ImageLimits, load_image

from ..conftest import RECIPES
from ..synthetic import make_category

UNDECODABLE = os.fsdecode(b"part_\xff\xfe.png")          # a name that is not valid UTF-8
LONG = "p" * 230 + ".png"                                 # 234 bytes: fine as input, too long with a suffix added


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A valid PNG header announcing width x height: a decompression bomb that never needs decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Good-but-odd images and bad files side by side; returns (folder, good names, bad names)."""
    folder = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)
    good = {}

    def keep(name: str, image: Image.Image, **save) -> None:
        image.save(folder / name, **save)
        good[name] = image

    keep("rgb.png", Image.fromarray(rgb))
    keep("grey.png", Image.fromarray(rgb[..., 0]))
    keep("deep16.png", Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)))
    keep("deep16.tif", Image.fromarray((rgb[..., 1].astype(np.uint16) * 257)))
    keep("cmyk.jpg", Image.fromarray(rgb).convert("CMYK"), quality=95)
    keep("palette_alpha.png", Image.fromarray(rgb).convert("P"), transparency=0)
    keep("grey_alpha.png", Image.fromarray(rgb[..., :2].copy(), mode="LA"))
    keep("one_pixel.png", Image.fromarray(rgb[:1, :1]))
    keep("strip.png", Image.fromarray(rng.integers(0, 255, (8, 20000, 3), dtype=np.uint8)))
    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[0x0112] = 6                                    # "rotate 90 CW to view": stored 40x48, shown 48x40
    keep("exif_rotated.jpg", rotated, exif=exif, quality=95)
    keep(UNDECODABLE, Image.fromarray(rgb))
    keep(LONG, Image.fromarray(rgb))

    bad = {"empty.png": "file is empty", "text.png": "not a readable image", "bomb.png": "over the limit",
           "truncated.png": "truncated", "truncated.jpg": "truncated"}
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("this is not an image\n")
    _png_header_only(folder / "bomb.png", 30000, 30000)
    data = (folder / "rgb.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    data = (folder / "exif_rotated.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    return folder, good, bad


def test_load_image_reads_every_odd_image_as_upright_rgb(hostile):
    folder, good, _ = hostile
    for name, original in good.items():
        image = load_image(folder / name)
        assert image.mode == "RGB", name
        expected = (original.height, original.width) if name == "exif_rotated.jpg" else original.size
        assert image.size == expected, name
    deep = np.asarray(load_image(folder / "deep16.png"))[..., 0]
    assert deep.max() > 200 and deep.min() < 50           # rescaled from 16 bits, not clipped to white


def test_load_image_names_the_file_and_the_reason(hostile):
    folder, _, bad = hostile
    for name, reason in bad.items():
        with pytest.raises(ImageLoadError) as error:
            load_image(folder / name)
        assert str(folder / name) in str(error.value) and reason in str(error.value), name
    with pytest.raises(ImageLoadError, match="over the limit of 100"):
        load_image(folder / "rgb.png", ImageLimits(max_pixels=100))
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(folder / "missing.png")


@pytest.mark.parametrize("command", ["score", "report"])
def test_commands_finish_the_good_images_and_list_the_bad(hostile, tmp_path, command, capsys):
    folder, good, bad = hostile
    out = tmp_path / command
    extra = ["--explain", "0", "--format", "json,html"] if command == "report" else []
    code = main([command, str(folder), "--out", str(out), "--features", "builtin", *extra])
    assert code == 1
    listing = json.loads((out / ("results.json" if command == "score" else "report.json")).read_text())
    records = listing["images"]
    assert len(records) == len(good)
    assert sorted(Path(f["path"]).name for f in listing["failures"]) == sorted(bad)
    for failure in listing["failures"]:
        assert bad[Path(failure["path"]).name] in failure["error"]
    names = [p.name for p in out.rglob("*")]
    assert not [n for n in names if n.endswith(".tmp")]
    assert all(len(n.encode()) <= 255 and n.isprintable() for n in names)
    err = capsys.readouterr().err
    assert all(name in err for name in bad)


def test_synth_uses_the_good_sources_and_reports_the_bad(hostile, tmp_path, capsys):
    folder, good, bad = hostile
    code = main(["synth", "--recipe", str(RECIPES / "textures.yaml"), "--source", str(folder), "--out",
                 str(tmp_path / "synth"), "--num", "40", "--seed", "1", "--workers", "1"])
    err = capsys.readouterr().err
    records = list((tmp_path / "synth" / "samples").glob("*.json"))
    assert code == 1 and 0 < len(records) < 40
    assert any(name in err for name in bad) and not list((tmp_path / "synth").rglob("*.tmp"))


@pytest.mark.parametrize("name", ["text.png", "bomb.png", "empty.png"])
def test_chat_refuses_a_bad_image_with_its_name(hostile, name, capsys):
    folder, _, bad = hostile
    assert main(["chat", str(folder / name), "--question", "Is it defective?", "--features", "builtin"]) == 2
    err = capsys.readouterr().err
    assert name in err and bad[name] in err and "Traceback" not in err


def test_train_prompts_leaves_out_bad_images_and_masks_and_trains_on_the_rest(tmp_path, capsys):
    category = make_category(tmp_path, "widget", size=64)
    (category / "test" / "stain" / "900.png").write_bytes(b"garbage")
    (category / "ground_truth" / "stain" / "900_mask.png").write_bytes(
        (category / "ground_truth" / "stain" / "000_mask.png").read_bytes())
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(category / "ground_truth" / "stain" / "001_mask.png")
    code = main(["train-prompts", "--data", str(category), "--out", str(tmp_path / "prompts"), "--backbone",
                 "anomaly-vlm-tiny", "--weights", "none", "--image-size", "64", "--epochs", "1", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and (tmp_path / "prompts" / "prompts.safetensors").is_file()
    assert "900.png: not a readable image" in err and "001_mask.png: mask is 16x16" in err
    assert "training prompts on 11 images" in err
