import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from anomaly_vlm.errors import DatasetError
from anomaly_vlm.synth.foreground import estimate_foreground
from anomaly_vlm.synth.perlin import perlin_mask, perlin_noise
from anomaly_vlm.synth.pasted import PerlinConfig
from anomaly_vlm.synth.simulators import (
    SIMULATORS,
    TOLERANCE,
    SimulationContext,
    Simulator,
    simulate,
    simulator_config,
)
from anomaly_vlm.synth.textures import FolderTextures, ProceduralTextures, procedural_normal
from anomaly_vlm.vocabulary import DEFECT_TYPES

SIZE = 128
EXPECTED_TYPES = {
    "perlin": "discoloration",
    "cutpaste": "misplaced material",
    "scar": "scar",
    "nsa": "foreign material",
    "scratch": "scratch",
    "crack": "crack",
    "hole": "hole",
    "stain": "stain",
    "contamination": "contamination",
    "missing": "missing material",
}


def disc_image(seed: int = 0, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """A noisy grey disc on a dark background, and the disc."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.35 * size) ** 2
    image = np.where(disc[..., None], 150.0, 20.0) + rng.normal(0, 4, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8), disc


@pytest.fixture(scope="module")
def scenes() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """kind -> (image, foreground, another normal image of the same kind)."""
    disc, foreground = disc_image(0)
    texture, other_texture = (procedural_normal(np.random.default_rng(s), SIZE, "texture") for s in (0, 1))
    return {
        "object": (disc, foreground, disc_image(1)[0]),
        "texture": (texture, np.ones((SIZE, SIZE), dtype=bool), other_texture),
    }


def make_context(seed: int, foreground: np.ndarray, other: np.ndarray | None) -> SimulationContext:
    return SimulationContext(
        rng=np.random.default_rng(seed),
        foreground=foreground,
        textures=ProceduralTextures(),
        other_normal=None if other is None else (lambda: other),
    )


def test_registry_covers_the_vocabulary():
    assert len(DEFECT_TYPES) == 10 and len(set(DEFECT_TYPES)) == 10
    assert set(SIMULATORS) == set(EXPECTED_TYPES)
    assert set(EXPECTED_TYPES.values()) == set(DEFECT_TYPES)


@pytest.mark.parametrize("kind", ["object", "texture"])
@pytest.mark.parametrize("name", sorted(SIMULATORS))
def test_simulator_contract(name, kind, scenes):
    image, foreground, other = scenes[kind]
    before = image.copy()
    for seed in range(3):
        defect = simulate(name, image, make_context(seed, foreground, other))
        assert defect.image.shape == image.shape and defect.image.dtype == np.uint8
        assert defect.mask.shape == image.shape[:2] and defect.mask.dtype == bool
        assert defect.mask.any()
        assert np.array_equal(defect.image[~defect.mask], image[~defect.mask])
        moved = np.abs(defect.image.astype(int) - image.astype(int)).max(axis=2)
        assert (moved[defect.mask] > TOLERANCE).all()
        assert (defect.mask & foreground).sum() >= 0.95 * defect.mask.sum()
        assert defect.defect_type == EXPECTED_TYPES[name]
    assert np.array_equal(image, before)


@pytest.mark.parametrize("name", sorted(SIMULATORS))
def test_simulator_is_deterministic(name, scenes):
    image, foreground, other = scenes["object"]
    first = simulate(name, image, make_context(7, foreground, other))
    second = simulate(name, image, make_context(7, foreground, other))
    assert np.array_equal(first.image, second.image)
    assert np.array_equal(first.mask, second.mask)
    assert first.defect_type == second.defect_type


def test_nsa_falls_back_to_the_image_itself(scenes):
    image, foreground, _ = scenes["texture"]
    defect = simulate("nsa", image, make_context(3, foreground, None))
    assert defect.mask.any() and defect.defect_type == "foreign material"


def test_simulate_gives_up_when_nothing_changes(monkeypatch, scenes):
    def unchanged(image, context, config):
        return image, np.ones(image.shape[:2], dtype=bool), "stain"

    monkeypatch.setitem(SIMULATORS, "inert", Simulator(PerlinConfig, unchanged))
    image, foreground, other = scenes["object"]
    with pytest.raises(ValueError, match="'inert'"):
        simulate("inert", image, make_context(0, foreground, other), attempts=2)


def test_simulate_rejects_unknown_name_and_bad_input(scenes):
    image, foreground, other = scenes["object"]
    with pytest.raises(ValueError, match="registered: .*perlin"):
        simulate("laser", image, make_context(0, foreground, other))
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        simulate("stain", image.astype(np.float32), make_context(0, foreground, other))
    with pytest.raises(ValueError, match="foreground"):
        simulate("stain", image, make_context(0, np.zeros_like(foreground), other))


def test_simulator_config_builds_and_checks():
    config = simulator_config("cutpaste", {"area": [0.05, 0.1], "jitter": 0})
    assert config.area == (0.05, 0.1) and config.jitter == 0.0 and isinstance(config.jitter, float)
    with pytest.raises(ValueError) as unknown:
        simulator_config("perlin", {"treshold": 0.4})
    assert "'perlin'" in str(unknown.value) and "'treshold'" in str(unknown.value) and "threshold" in str(unknown.value)
    with pytest.raises(ValueError) as wrong:
        simulator_config("perlin", {"max_exponent": "5"})
    assert "'perlin'" in str(wrong.value) and "max_exponent" in str(wrong.value) and "int" in str(wrong.value)
    with pytest.raises(ValueError, match="'area'"):
        simulator_config("cutpaste", {"area": [0.2, 0.1]})
    with pytest.raises(ValueError, match="rotate"):
        simulator_config("perlin", {"rotate": 1})


def test_perlin_noise_any_shape_in_range():
    rng = np.random.default_rng(0)
    for shape, scale in [((512, 512), (8, 8)), ((300, 200), (32, 4)), ((7, 5), (2, 2))]:
        noise = perlin_noise(shape, scale, rng)
        assert noise.shape == shape and noise.min() >= -1 and noise.max() <= 1
    assert perlin_mask((300, 200), rng).shape == (300, 200)


def test_perlin_mask_scale_and_threshold():
    def pieces(exponent: int) -> float:
        rng = np.random.default_rng(0)
        counts = []
        for _ in range(8):
            mask = perlin_mask((256, 256), rng, exponent, exponent, threshold=0.2, rotate=False)
            counts.append(ndimage.label(mask)[1])
        return float(np.mean(counts))

    assert pieces(4) > 4 * pieces(1)
    areas = [perlin_mask((128, 128), np.random.default_rng(5), 3, 3, t, rotate=False).mean() for t in (-0.2, 0.2, 0.5)]
    assert areas[0] > areas[1] > areas[2]
    assert perlin_mask((64, 64), np.random.default_rng(0), threshold=-1.01).all()
    assert not perlin_mask((64, 64), np.random.default_rng(0), threshold=1.0).any()


def test_estimate_foreground_finds_a_disc():
    image, disc = disc_image(2, size=256)
    found = estimate_foreground(image, "object")
    assert (found & disc).sum() / (found | disc).sum() > 0.9
    assert estimate_foreground(image, "texture").all()
    assert estimate_foreground(np.full((64, 80, 3), 90, dtype=np.uint8), "object").all()


def test_folder_textures(tmp_path):
    empty = tmp_path / "no_textures"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no_textures"):
        FolderTextures(empty)
    Image.fromarray(procedural_normal(np.random.default_rng(0), 96, "texture")).save(empty / "weave.png")
    texture = FolderTextures(empty).sample(np.random.default_rng(0), (40, 70))
    assert texture.shape == (40, 70, 3) and texture.dtype == np.uint8


def test_procedural_textures_shape():
    rng = np.random.default_rng(0)
    for shape in [(300, 200), (64, 64)]:
        texture = ProceduralTextures().sample(rng, shape)
        assert texture.shape == (*shape, 3) and texture.dtype == np.uint8


@pytest.mark.parametrize("kind", ["object", "texture"])
def test_procedural_normal(kind):
    images = [procedural_normal(np.random.default_rng(seed), 96, kind) for seed in range(4)]
    assert all(i.shape == (96, 96, 3) and i.dtype == np.uint8 for i in images)
    assert not np.array_equal(images[0], images[1])
    assert all(i.std() > 2 for i in images)
    if kind == "object":
        for image in images:
            foreground = estimate_foreground(image, "object")
            assert not foreground[0, 0] and not foreground[-1, -1] and 0.05 < foreground.mean() < 0.7
