"""Property-based tests: image loading, region proposals and report rendering under hostile inputs.

Inspection software is fed whatever lands in a folder: truncated uploads, odd image
modes, maps from any model and file names typed by people. Hypothesis generates
these inputs; each test states one property that has to hold for every one of them.
"""

import html
import io
import json
import math
from html.parser import HTMLParser

import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from PIL import Image

from anomaly_vlm.errors import ImageLoadError
from anomaly_vlm.io import load_image
from anomaly_vlm.templates import templates_dir
from anomaly_vlm.inspector import build_inspection
from anomaly_vlm.proposals import ProposalConfig, make_region, propose
from anomaly_vlm.verdicts import Thresholds
from anomaly_vlm.report import (SCHEMA_PATH, ReportEntry, ReportOptions, make_figures, render_html, render_markdown,
                                report_document)
from anomaly_vlm.types import Inspection
from anomaly_vlm.vocabulary import LOCATIONS

# no example database: the tests stay side-effect free in the repository
PROPERTY = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """One folder per module: hypothesis runs many examples in one call of a test, so no function-scoped tmp_path."""
    return tmp_path_factory.mktemp("properties")


# ---------------------------------------------------------------------------------------------------------------
# 1. image loading

SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif"}
MODES = ("1", "L", "P", "RGB", "RGBA", "LA", "I;16", "CMYK")


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _savable(mode: str, fmt: str) -> bool:
    try:
        _encode(Image.new(mode, (2, 2)), fmt)
    except (OSError, KeyError, ValueError):
        return False
    return True


SAVABLE = [(mode, fmt) for mode in MODES for fmt in SUFFIXES if _savable(mode, fmt)]


def _seed_files() -> dict[str, list[bytes]]:
    """Small valid files of each kind, for the fuzzer to corrupt: headers that parse, data that may not."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (8, 12, 3), dtype=np.uint8))
    palette = rgb.convert("P")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90
    wide = Image.frombytes("I;16", (5, 3), rng.integers(0, 65536, 15, dtype="<u2").tobytes())
    return {
        "PNG": [_encode(rgb, "PNG"), _encode(palette, "PNG", transparency=0), _encode(wide, "PNG")],
        "JPEG": [_encode(rgb, "JPEG", exif=exif.tobytes()), _encode(rgb.convert("L"), "JPEG", progressive=True)],
        "TIFF": [_encode(rgb, "TIFF"), _encode(rgb, "TIFF", compression="tiff_lzw"),
                 _encode(rgb.convert("CMYK"), "TIFF"), _encode(wide, "TIFF"),
                 _encode(rgb.convert("RGBA"), "TIFF", compression="tiff_adobe_deflate")],
    }


SEEDS = _seed_files()
MAGIC = {"PNG": (b"\x89PNG\r\n\x1a\n", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
         "JPEG": (b"\xff\xd8\xff", b"\xff\xd8\xff\xe1"),
         "TIFF": (b"II*\x00", b"MM\x00*", b"II*\x00\x08\x00\x00\x00")}


def _retyped_strip_offsets(field_type: int) -> bytes:
    """A valid 12x8 RGB TIFF whose StripOffsets tag (273) claims another field type (7 UNDEFINED, 11 FLOAT)."""
    data = bytearray(SEEDS["TIFF"][0])
    assert data[:4] == b"II*\x00"
    ifd = int.from_bytes(data[4:8], "little")
    for entry in range(ifd + 2, ifd + 2 + 12 * int.from_bytes(data[ifd:ifd + 2], "little"), 12):
        if int.from_bytes(data[entry:entry + 2], "little") == 273:
            data[entry + 2:entry + 4] = field_type.to_bytes(2, "little")
            return bytes(data)
    raise AssertionError("no StripOffsets tag")


@st.composite
def corrupted(draw, seeds: list[bytes]) -> bytes:
    """A valid seed file with a few bytes overwritten, maybe truncated: headers that parse, data that may not."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.none() | st.integers(0, len(data)))
    return bytes(data[:cut])


def hostile_bytes(*kinds: str):
    """Random bytes, bytes behind a real signature, and damaged real files of these kinds."""
    return st.one_of(
        st.binary(max_size=1024),
        st.tuples(st.sampled_from([m for k in kinds for m in MAGIC[k]]), st.binary(max_size=512)).map(b"".join),
        corrupted([seed for k in kinds for seed in SEEDS[k]]),
    )


file_names = st.sampled_from(["sample", "part 01", "pièce_ü", "a'b\"c", "<x>&y"])
suffixes = st.sampled_from([".png", ".jpg", ".tif"])


def _loads_or_names_the_file(path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        image = load_image(path)
    except ImageLoadError as exc:
        event("ImageLoadError")
        assert str(path) in str(exc)
    else:
        event("loaded")
        assert isinstance(image, Image.Image) and image.mode == "RGB"
        assert image.width >= 1 and image.height >= 1


@settings(max_examples=60, **PROPERTY)
@given(data=hostile_bytes("PNG", "JPEG"), name=file_names, suffix=suffixes)
@example(data=b"", name="sample", suffix=".png")
@example(data=SEEDS["PNG"][0][:40], name="sample", suffix=".png")
@example(data=SEEDS["JPEG"][0][:200], name="sample", suffix=".jpg")
def test_load_image_returns_rgb_or_a_clear_error(folder, data, name, suffix):
    """Any bytes under an image name: an 8-bit RGB image, or an ImageLoadError naming the file, nothing else.

    A batch run must report a broken upload and go on; any other exception aborts it
    or, worse, reaches the user as a traceback. Damaged TIFFs have their own test below.
    """
    _loads_or_names_the_file(folder / f"{name}{suffix}", data)


@settings(max_examples=60, **PROPERTY)
@given(data=hostile_bytes("TIFF"), name=file_names, suffix=suffixes)
@example(data=_retyped_strip_offsets(7), name="sample", suffix=".tif")
@example(data=_retyped_strip_offsets(11), name="sample", suffix=".tif")
def test_load_image_survives_damaged_tiffs(folder, data, name, suffix):
    """The same contract for TIFF, the format of most industrial cameras: RGB, or ImageLoadError naming the file."""
    _loads_or_names_the_file(folder / f"{name}{suffix}", data)


@st.composite
def small_images(draw) -> tuple[Image.Image, str]:
    """A random image 1..64 x 1..64 in a mode its drawn format can store."""
    mode, fmt = draw(st.sampled_from(SAVABLE))
    width, height = draw(st.integers(1, 64)), draw(st.integers(1, 64))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    constant = draw(st.booleans())  # flat images shrink nicely and hit the edge values 0 and the maximum

    def noise(dtype, top, bands=None):
        shape = (height, width) if bands is None else (height, width, bands)
        if constant:
            return np.full(shape, draw(st.sampled_from([0, top])), dtype)
        return rng.integers(0, top + 1, shape, dtype=dtype)

    if mode == "1":
        image = Image.fromarray(noise(np.uint8, 1).astype(bool))
    elif mode == "I;16":
        image = Image.frombytes("I;16", (width, height), noise("<u2", 65535).tobytes())
    else:
        image = Image.frombytes(mode, (width, height), noise(np.uint8, 255, Image.getmodebands(mode)).tobytes())
        if mode == "P":
            image.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
    return image, fmt


@settings(max_examples=60, **PROPERTY)
@given(drawn=small_images())
def test_load_image_turns_every_mode_into_rgb_of_the_same_size(folder, drawn):
    """Every mode a camera or tool may write (bilevel, palette, alpha, 16-bit, CMYK) loads as RGB, same size.

    The localizer expects 8-bit RGB; a loader that passed a 16-bit or CMYK image through, or
    resized it, would shift every box. Lossless files of colour-only modes must keep their pixels.
    """
    image, fmt = drawn
    path = folder / f"generated{SUFFIXES[fmt]}"
    path.write_bytes(_encode(image, fmt))
    loaded = load_image(path)
    assert loaded.mode == "RGB"
    assert loaded.size == image.size
    if fmt != "JPEG" and image.mode in ("1", "L", "P", "RGB"):
        assert np.array_equal(np.asarray(loaded), np.asarray(image.convert("RGB")))


# ---------------------------------------------------------------------------------------------------------------
# 2. region proposals

maps = arrays(np.float64, array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=48),
              elements=st.floats(0.0, 1.0, allow_nan=False, allow_infinity=False))
image_sizes = st.none() | st.tuples(st.integers(1, 2000), st.integers(1, 2000))
configs = st.just(ProposalConfig()) | st.builds(
    ProposalConfig, min_area_fraction=st.floats(0.0, 0.05), merge_distance=st.floats(0.0, 0.2),
    top_k=st.integers(1, 8), max_side=st.integers(1, 1024))


@settings(max_examples=60, **PROPERTY)
@given(anomaly_map=maps, threshold=st.floats(0.0, 1.0), config=configs, image_size=image_sizes)
@example(anomaly_map=np.zeros((4, 6)), threshold=0.0, config=ProposalConfig(), image_size=None)
@example(anomaly_map=np.zeros((4, 6)), threshold=0.5, config=ProposalConfig(), image_size=(640, 480))
@example(anomaly_map=np.ones((48, 48)), threshold=1.0, config=ProposalConfig(), image_size=(1500, 1001))
@example(anomaly_map=np.ones((1, 1)), threshold=0.0, config=ProposalConfig(top_k=1), image_size=(1, 2000))
@example(anomaly_map=np.full((5, 7), 0.7), threshold=0.7, config=ProposalConfig(), image_size=(1999, 13))
@example(anomaly_map=np.zeros((1, 1)), threshold=0.0, config=ProposalConfig(), image_size=(1025, 1001))
def test_proposals_are_well_formed(anomaly_map, threshold, config, image_size):
    """Any finite map in [0, 1], threshold, config and image size: every region is a valid, ranked record.

    Boxes index pixels of the image (crops, overlays, the report schema), so one pixel out
    of range or an empty box breaks whatever reads them downstream.
    """
    regions = propose(anomaly_map, threshold, config, image_size)
    width, height = image_size or (anomaly_map.shape[1], anomaly_map.shape[0])
    assert len(regions) <= config.top_k
    for region in regions:
        x0, y0, x1, y1 = region.box
        assert all(type(v) is int for v in region.box)
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert region.box_norm == pytest.approx((x0 / width, y0 / height, x1 / width, y1 / height), abs=1e-6)
        assert all(0.0 <= v <= 1.0 for v in region.box_norm)
        assert 0.0 <= region.area_fraction <= 1.0
        assert region.location in LOCATIONS
        assert all(math.isfinite(v) for v in (region.peak_score, region.mean_score))
        assert region.peak_score >= region.mean_score
        # pixels of a region are at or above the threshold; bilinear resizing never leaves the map's range
        assert region.mean_score >= threshold - 1e-9   # a float mean of values at the threshold may round below
        assert region.peak_score <= anomaly_map.max() + 1e-6
    peaks = [r.peak_score for r in regions]
    assert peaks == sorted(peaks, reverse=True)

    # scored as the map's peak, the part crosses the threshold only where its map does (see look_level)
    score = float(anomaly_map.max())
    inspection = build_inspection("part.png", anomaly_map, score, Thresholds(threshold), {}, image_size, config)
    assert inspection.regions == regions and inspection.image_size == (width, height)
    assert json.loads(json.dumps(inspection.to_dict()))["regions"] == [r.to_dict() for r in regions]


@pytest.mark.parametrize("value", [0.0, 0.1, 0.7, 1.0])
@pytest.mark.parametrize("image_size", [None, (7, 5), (1500, 1001), (1025, 1001), (1, 2000)])
def test_flat_maps_give_the_whole_image_or_nothing(value, image_size):
    """A flat map at or above the threshold is one region covering the image; above it, no region at all."""
    anomaly_map = np.full((5, 7), value)
    width, height = image_size or (7, 5)
    whole, = propose(anomaly_map, value, ProposalConfig(), image_size)
    assert whole.box == (0, 0, width, height)
    assert whole.area_fraction == pytest.approx(1.0) and whole.location == "center"
    assert whole.peak_score == pytest.approx(value)
    if value < 1.0:
        assert propose(anomaly_map, min(1.0, value + 1e-6), ProposalConfig(), image_size) == []


@pytest.mark.parametrize("value, image_size", [(0.1, None), (0.7, (1500, 1001))])
def test_mean_score_never_exceeds_peak_score(value, image_size):
    """Exactly `peak_score >= mean_score`: a consumer comparing the two must not see a mean above the peak."""
    region, = propose(np.full((1, 3) if image_size is None else (5, 7), value), value, ProposalConfig(), image_size)
    assert region.peak_score >= region.mean_score


@pytest.mark.parametrize("image_size, max_side", [((1025, 1001), 1024), ((23, 167), 145)])
def test_area_fraction_never_exceeds_one(image_size, max_side):
    """Exactly `area_fraction <= 1`: a region cannot cover more than the whole image."""
    region, = propose(np.zeros((1, 1)), 0.0, ProposalConfig(max_side=max_side), image_size)
    assert region.box == (0, 0, *image_size)
    assert region.area_fraction <= 1.0


# ---------------------------------------------------------------------------------------------------------------
# 3. report rendering

SCHEMA = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
HOSTILE = ['<script>alert("x")</script>', "a&b", "'\"<>&", "零件-ü.png", "", "</td></tr><script>", "&lt;", "{{ 7*7 }}"]
hostile_text = st.one_of(st.text(max_size=40), st.sampled_from(HOSTILE),
                         st.tuples(st.text(max_size=10), st.sampled_from(HOSTILE)).map("".join))


class _Tags(HTMLParser):
    """Every start tag of a page."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags = set()
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)


# the tags the report layout itself writes; user text must add none
TEMPLATE_TAGS = _Tags((templates_dir() / "report.html.j2").read_text(encoding="utf-8")).tags


@st.composite
def regions_in(draw, width: int, height: int):
    x0, y0 = draw(st.integers(0, width - 1)), draw(st.integers(0, height - 1))
    x1, y1 = draw(st.integers(x0 + 1, width)), draw(st.integers(y0 + 1, height))
    area = draw(st.floats(0.0, float((x1 - x0) * (y1 - y0))))
    peak = draw(st.floats(0.0, 1.0))
    return make_region((x0, y0, x1, y1), width, height, area, peak, draw(st.floats(0.0, peak)))


@st.composite
def entries(draw):
    width, height = draw(st.integers(1, 4000)), draw(st.integers(1, 4000))
    models = draw(st.sampled_from([{}, {"mode": "reference", "features": "builtin"}]) | st.builds(
        lambda backbone: {"mode": "zero-shot", "backbone": backbone, "weights": "none", "prompts": "<default>"},
        hostile_text))
    inspection = Inspection(draw(hostile_text), draw(st.floats(0.0, 1.0)), draw(st.floats(0.0, 1.0)),
                            draw(st.lists(regions_in(width, height), max_size=5)), models, (width, height))
    return ReportEntry(inspection, path=draw(st.none() | hostile_text),
                       explanation=draw(st.none() | hostile_text),
                       flags=draw(st.lists(hostile_text, max_size=2)))


failures = st.lists(st.fixed_dictionaries({"path": hostile_text, "error": hostile_text}), max_size=2)


def _shown(page: str, text: str) -> bool:
    """`text` is on the page, escaped; Jinja writes quotes as &#34; and &#39;, html.escape as &quot; and &#x27;."""
    return html.escape(text) in page.replace("&#34;", "&quot;").replace("&#39;", "&#x27;")


@settings(max_examples=40, **PROPERTY)
@given(report_entries=st.lists(entries(), max_size=4), failures=failures)
@example(report_entries=[], failures=[])
@example(report_entries=[ReportEntry(Inspection('<script>alert("id")</script>', 0.9, 0.5,
                                                [make_region((0, 0, 8, 8), 8, 8, 64.0, 0.9, 0.8)], {}, (8, 8)),
                                     explanation="<script>alert('x')</script> & more")], failures=[])
def test_reports_validate_and_escape_user_text(report_entries, failures):
    """Any inspections, ids and explanations: the JSON validates against the schema, the HTML injects nothing.

    Image ids come from file names and explanations from a language model; both are
    untrusted, so the HTML must show them as text (escaped) and never as markup.
    """
    document = json.loads(json.dumps(report_document(report_entries, failures)))
    jsonschema.validate(document, SCHEMA, cls=jsonschema.Draft202012Validator)
    assert [i["image_id"] for i in document["images"]] == [
        e.inspection.image_id for e in sorted(report_entries, key=lambda e: -e.inspection.image_score)]

    figures = make_figures(report_entries, document, ReportOptions())
    page = render_html(document, figures)
    assert "<script" not in page.lower()
    assert _Tags(page).tags <= TEMPLATE_TAGS
    for entry in report_entries:
        assert _shown(page, entry.inspection.image_id)
        if entry.explanation:
            assert _shown(page, entry.explanation)
            assert all(_shown(page, flag) for flag in entry.flags)
    for failure in failures:
        assert _shown(page, failure["path"]) and _shown(page, failure["error"])

    text, files = render_markdown(document, figures, "assets")
    assert isinstance(text, str) and all(name.startswith("assets/") for name in files)
