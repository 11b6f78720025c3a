"""Safe image loading and the dataset layouts the field uses (MVTec AD / VisA, plain folders)."""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DatasetError, ImageLoadError
from .types import Sample

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
NORMAL_DEFECT = "good"


@dataclass(frozen=True)
class ImageLimits:
    """Guards against decompression bombs and absurd uploads."""

    max_pixels: int = field(default=64_000_000, metadata={"help": "largest width*height accepted"})
    max_bytes: int = field(default=200 * 2**20, metadata={"help": "largest file size accepted"})


def load_image(path: str | Path, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Open an image as 8-bit RGB, upright per its EXIF orientation, within `limits`."""
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"{path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise ImageLoadError(f"{path}: file is empty")
    if size > limits.max_bytes:
        raise ImageLoadError(f"{path}: file is {size} bytes, over the limit of {limits.max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > limits.max_pixels:
                    raise ImageLoadError(
                        f"{path}: {width}x{height} pixels is over the limit of {limits.max_pixels}"
                    )
                image.load()
                image = ImageOps.exif_transpose(image)
                return _to_rgb(image)
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageLoadError(f"{path}: announces more pixels than Pillow's decompression-bomb guard allows; "
                             f"over the limit of {limits.max_pixels}") from None
    except UnidentifiedImageError as exc:
        raise ImageLoadError(f"{path}: not a readable image ({exc})") from None
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError, EOFError, struct.error) as exc:
        # damaged headers surface from Pillow's decoders as any of these
        raise ImageLoadError(f"{path}: corrupt or truncated image ({type(exc).__name__}: {exc})") from None


def load_samples(samples: list[Sample], limits: ImageLimits, failures: list[dict]) -> list[tuple[Sample, Image.Image]]:
    """The samples that load, with their images; each one that does not goes to `failures` as unreadable."""
    loaded = []
    for sample in samples:
        try:
            loaded.append((sample, load_image(sample.path, limits)))
        except ImageLoadError as exc:
            failures.append({"path": str(sample.path), "error": str(exc), "kind": "unreadable"})
    return loaded


def check_mask(sample: Sample, image_size: tuple[int, int]) -> np.ndarray | None:
    """The sample's mask at full size, refused when its size differs from its image's; None without one."""
    if sample.mask_path is None:
        return None
    mask = load_mask(sample.mask_path)
    if (mask.shape[1], mask.shape[0]) != tuple(image_size):
        raise DatasetError(f"{sample.mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
                           f"{sample.path.name} is {image_size[0]}x{image_size[1]}; a mask must have its "
                           "image's size (re-export the mask, or fix the image it belongs to)")
    return mask


def usable_samples(samples: list[Sample], limits: ImageLimits = ImageLimits(),
                   progress: bool = True) -> tuple[list[Sample], list[dict]]:
    """The samples whose image (and mask) read correctly, and {path, error} for the others.

    Training reads its images many times in a shuffled order; one bad file found in
    epoch 3 must not end the run, so every file is read once up front.
    """
    from tqdm.auto import tqdm

    usable, failures = [], []
    for sample in tqdm(samples, desc="checking images", unit="img", disable=not progress, leave=False):
        try:
            check_mask(sample, load_image(sample.path, limits).size)
        except (ImageLoadError, DatasetError) as exc:
            failures.append({"path": str(sample.path), "error": str(exc)})
        else:
            usable.append(sample)
    return usable, failures


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB, rescaling high-bit-depth data instead of clipping it."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        data = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or data.max() > 255 else 255.0
        image = Image.fromarray(np.clip(data / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGB", image.size, (0, 0, 0))
        rgba = image.convert("RGBA")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def load_mask(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Binary mask (H, W) bool, optionally resized (nearest) to `size` = (width, height)."""
    try:
        with Image.open(path) as mask:
            mask = mask.convert("L")
            if size is not None and mask.size != tuple(size):
                mask = mask.resize(tuple(size), Image.NEAREST)
            return np.asarray(mask) > 127
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetError(f"{path}: unreadable mask ({exc})") from None


def is_image_name(name: str) -> bool:
    """An image by its name: a known suffix, not a hidden file."""
    path = Path(name)
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def is_image_file(path: Path) -> bool:
    return path.is_file() and is_image_name(path.name)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def is_category_root(path: Path) -> bool:
    """An MVTec/VisA category: has `test/` with one folder per defect (or `train/good`)."""
    return path.is_dir() and ((path / "test").is_dir() or (path / "train" / NORMAL_DEFECT).is_dir())


def read_category(root: str | Path, split: str = "test") -> list[Sample]:
    """Samples of one category in the MVTec AD layout (VisA as anomalib lays it out).

    Masks live at `ground_truth/<defect>/<name>_mask.png` (MVTec) or
    `ground_truth/<defect>/<name>.png` (VisA). Without `ground_truth/` the samples
    carry labels only.
    """
    root = Path(root)
    split_dir = root / split
    if not split_dir.is_dir():
        raise DatasetError(f"{root}: no '{split}/' folder; expected the MVTec layout {root}/{split}/<defect>/*.png")
    truth = root / "ground_truth"
    pixel_truth = truth.is_dir()
    samples = []
    for defect_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        defect = defect_dir.name
        label = 0 if defect == NORMAL_DEFECT else 1
        for image_path in _images_in(defect_dir):
            mask_path = None
            if label and pixel_truth:
                mask_path = _find_mask(truth / defect, image_path)
            samples.append(
                Sample(image_path, label, mask_path, root.name, defect, root, pixel_truth)
            )
    if not samples:
        raise DatasetError(f"{split_dir}: no images found in its defect folders")
    return samples


def _find_mask(folder: Path, image_path: Path) -> Path:
    for name in (f"{image_path.stem}_mask.png", f"{image_path.stem}.png"):
        if (folder / name).is_file():
            return folder / name
    raise DatasetError(
        f"{image_path}: no mask for this defect image; expected {folder / (image_path.stem + '_mask.png')} "
        f"(MVTec) or {folder / (image_path.stem + '.png')} (VisA). Add the mask, or remove the "
        f"ground_truth/ folder to evaluate image-level metrics only."
    )


def read_folder(root: str | Path) -> list[Sample]:
    """Every image below `root` (recursively), labels unknown."""
    root = Path(root)
    paths = sorted(p for p in root.rglob("*") if is_image_file(p))
    if not paths:
        raise DatasetError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return [Sample(p, root=root) for p in paths]


def read_dataset(root: str | Path, categories: list[str] | None = None, split: str = "test") -> list[Sample]:
    """A category root, or a dataset root holding several categories (all, or those named)."""
    root = Path(root)
    if is_category_root(root):
        return read_category(root, split)
    found = sorted(p for p in root.iterdir() if is_category_root(p)) if root.is_dir() else []
    if categories:
        missing = sorted(set(categories) - {p.name for p in found})
        if missing:
            raise DatasetError(f"{root}: categories not found: {', '.join(missing)}")
        found = [p for p in found if p.name in categories]
    if not found:
        raise DatasetError(f"{root}: not an MVTec/VisA category or dataset root (no <category>/{split}/ folders)")
    return [s for p in found for s in read_category(p, split)]


def collect_samples(paths: list[str | Path]) -> list[Sample]:
    """Resolve CLI paths: image files, plain folders, category roots or dataset roots."""
    samples: list[Sample] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            samples.append(Sample(path))
        elif not path.is_dir():
            raise DatasetError(f"{path}: no such file or folder")
        elif is_category_root(path) or any(is_category_root(p) for p in path.iterdir()):
            samples.extend(read_dataset(path))
        else:
            samples.extend(read_folder(path))
    return samples
