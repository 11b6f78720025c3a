"""Product profiles: a part number's recipe (reference banks, thresholds, notes), stored by name.

A product lives in `<home>/products/<NAME>/`: one `bank-<features>.safetensors` per
feature source (a fitted reference scorer's tensors, its JSON meta in the file's
metadata) and `profile.json`. Only safetensors and JSON are ever read, never pickles.
A product folder is built beside its final place and renamed in, so a reader finds a
whole product or none.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import CheckpointError, ProductError
from .files import FILE_MODE, write_json
from .localizer.checkpoint import CONFIG_FILE as PROMPTS_CONFIG, WEIGHTS_FILE as PROMPTS_WEIGHTS
from .localizer.features import BuiltinFeatures, FeatureSource
from .localizer.fusion import ModeScale
from .localizer.learned_scorer import CONFIG_FILE as LEARNED_CONFIG, WEIGHTS_FILE as LEARNED_WEIGHTS
from .localizer.reference import ReferenceScorer

FORMAT_VERSION = 1
PROFILE_FILE = "profile.json"
LEARNED_DIR = "learned"
LEARNED_KEY = "builtin+learned"
"""The thresholds key of a learned product: reference scoring on built-in features fused with the learned model."""
PROMPTS_DIR = "prompt_checkpoint"
PROMPTS_KEY = "clip+prompts"
"""The thresholds key of a product's CLIP bank fused with prompts learned on the product."""
MODEL_FILES = {LEARNED_DIR: (LEARNED_WEIGHTS, LEARNED_CONFIG), PROMPTS_DIR: (PROMPTS_WEIGHTS, PROMPTS_CONFIG)}
STATE_KEY = "reference_state"
NAME_RULE = "1-64 characters of letters, digits, '.', '_' or '-', not starting with '.'"
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
# Folders get execute permission wherever FILE_MODE grants read.
_FOLDER_MODE = FILE_MODE | (FILE_MODE & 0o444) >> 2

log = logging.getLogger(__name__)


def default_home() -> Path:
    """$ANOMALY_VLM_HOME, else $XDG_DATA_HOME/anomaly_vlm, else ~/.local/share/anomaly_vlm."""
    if os.environ.get("ANOMALY_VLM_HOME"):
        return Path(os.environ["ANOMALY_VLM_HOME"]).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg and Path(xdg).is_absolute():  # the XDG spec says to ignore a relative value
        return Path(xdg) / "anomaly_vlm"
    return Path.home() / ".local" / "share" / "anomaly_vlm"


def check_name(name: str, what: str = "product name") -> str:
    """`name` unchanged if valid; names become folder and file names, so the rule keeps them safe."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ProductError(f"invalid {what} {name!r}: use {NAME_RULE}")
    return name


@dataclass
class ProductProfile:
    """What `profile.json` holds: enough to show a product and to find its banks."""

    name: str
    folder: Path
    features: list[str]  # feature sources with a bank, e.g. ["builtin", "clip"]
    thresholds: dict  # the caller's calibrated thresholds, stored verbatim
    reference_digest: str  # ReferenceScorer.references_digest of every bank
    counts: dict[str, int]  # {"good": ..., "defective": ...}
    notes: str | None  # read by the assistant
    created: str  # ISO-8601, UTC
    good: list[str]  # reference image paths as given, in bank order
    defective: list[str]
    format_version: int = FORMAT_VERSION
    learned: dict | None = None  # the learned localizer's describe(), when the product was learned
    prompts: dict | None = None  # the prompt localizer's describe(), when prompts were learned on the product
    fusion: dict | None = None  # thresholds key -> mode -> ModeScale dict: the scales its fused parts are put on

    def scales(self, key: str) -> dict[str, ModeScale] | None:
        """The good-part scales the fused scorer under thresholds key `key` was calibrated on (None: plain mean)."""
        stored = (self.fusion or {}).get(key)
        return {mode: ModeScale(**scale) for mode, scale in stored.items()} if stored else None

    def to_dict(self) -> dict:
        return {**asdict(self), "folder": str(self.folder)}

    @classmethod
    def from_dict(cls, data: dict) -> ProductProfile:
        return cls(**{**data, "folder": Path(data["folder"])})

    @property
    def learned_folder(self) -> Path | None:
        return self.folder / LEARNED_DIR if self.learned else None

    @property
    def prompts_folder(self) -> Path | None:
        return self.folder / PROMPTS_DIR if self.prompts else None


class ProductStore:
    """The products under one home folder. Nothing is cached: each call reads the disk."""

    def __init__(self, home: Path | None = None):
        self.home = Path(home) if home is not None else default_home()
        self.root = self.home / "products"

    def _folder(self, name: str) -> Path:
        return self.root / check_name(name)

    def _names(self) -> list[str]:
        """Names of the folders that look like products (temporaries start with '.', so never match)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if _NAME.fullmatch(p.name) and (p / PROFILE_FILE).is_file())

    def _unknown(self, name: str) -> ProductError:
        known = ", ".join(self._names()) or "none yet"
        return ProductError(f"no product {name!r} in {self.root} (known: {known}); add it with `anomaly-vlm product add {name}`")

    def exists(self, name: str) -> bool:
        return (self._folder(name) / PROFILE_FILE).is_file()

    def add(self, name: str, banks: dict[str, ReferenceScorer], thresholds: dict, good: Sequence[str],
            defective: Sequence[str] = (), notes: str | None = None, replace: bool = False) -> ProductProfile:
        """Store fitted reference banks (keyed by feature-source name) and thresholds as product `name`."""
        folder = self._folder(name)
        profile = self._profile(name, folder, banks, thresholds, good, defective, notes)
        if not replace and folder.exists():
            raise self._exists(name, folder)
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=self.root))
        try:
            os.chmod(staging, _FOLDER_MODE)
            for feature, bank in banks.items():
                tensors, meta = bank.state()
                save_file(tensors, str(staging / f"bank-{feature}.safetensors"), metadata={STATE_KEY: json.dumps(meta)})
            write_json(staging / PROFILE_FILE, profile.to_dict())
            self._move_in(staging, folder, name, replace)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return profile

    def _profile(self, name: str, folder: Path, banks: dict[str, ReferenceScorer], thresholds: dict,
                 good: Sequence[str], defective: Sequence[str], notes: str | None) -> ProductProfile:
        """The profile `add` would write, after checking that banks, paths and thresholds agree."""
        if not banks:
            raise ProductError(f"product {name!r}: no reference banks given; fit a ReferenceScorer on its good images first")
        for feature, bank in banks.items():
            check_name(feature, "feature source name")
            if bank.source.name != feature:
                raise ProductError(f"product {name!r}: the bank filed as {feature!r} uses the {bank.source.name!r} feature source")
            if bank.num_references != len(good):
                raise ProductError(f"product {name!r}: the {feature!r} bank holds {bank.num_references} references "
                                   f"but {len(good)} good image paths were given; pass the images the bank was fitted on")
        digests = {bank.references_digest for bank in banks.values()}
        if len(digests) != 1:
            raise ProductError(f"product {name!r}: the banks were fitted on different reference images; fit all on the same good images")
        try:
            json.dumps(thresholds)
        except (TypeError, ValueError) as exc:
            raise ProductError(f"product {name!r}: thresholds must be JSON-able ({exc})") from None
        return ProductProfile(
            name=name, folder=folder, features=sorted(banks), thresholds=thresholds, reference_digest=digests.pop(),
            counts={"good": len(good), "defective": len(defective)}, notes=notes,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            good=[str(p) for p in good], defective=[str(p) for p in defective],
        )

    @staticmethod
    def _exists(name: str, folder: Path) -> ProductError:
        return ProductError(f"product {name!r} already exists ({folder}); run `anomaly-vlm product remove {name}` first, "
                            "or add it with replace (--replace)")

    def _move_in(self, staging: Path, folder: Path, name: str, replace: bool) -> None:
        """Rename the finished folder into place; on replace, the old one steps aside first and goes after.

        Between the two renames the product is briefly absent, never half-written.
        """
        old = folder.with_name(f".{name}.{secrets.token_hex(4)}.old") if replace and folder.exists() else None
        if old:
            os.rename(folder, old)
        try:
            os.rename(staging, folder)
        except OSError:
            if old:
                os.rename(old, folder)
            raise self._exists(name, folder) from None  # another writer got there first
        if old:
            shutil.rmtree(old, ignore_errors=True)

    def list(self) -> list[ProductProfile]:
        """Every readable product, by name; a broken folder is logged and skipped."""
        profiles = []
        for name in self._names():
            try:
                profiles.append(self.load(name))
            except ProductError as exc:
                log.warning("skipping product folder: %s", exc)
        return profiles

    def load(self, name: str) -> ProductProfile:
        folder = self._folder(name)
        path = folder / PROFILE_FILE
        if not path.is_file():
            raise self._unknown(name)
        fix = f"remove it with `anomaly-vlm product remove {name}` and add it again"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProductError(f"{path}: unreadable product profile ({exc}); {fix}") from None
        version = data.get("format_version") if isinstance(data, dict) else None
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ProductError(f"{path}: profile format version {version!r} is not one this anomaly_vlm reads (up to {FORMAT_VERSION})")
        try:
            profile = ProductProfile.from_dict({**data, "folder": str(folder)})
        except (KeyError, TypeError) as exc:
            raise ProductError(f"{path}: malformed product profile ({exc}); {fix}") from None
        if profile.name != name:
            raise ProductError(f"{path}: the profile names product {profile.name!r}, not {name!r}; {fix}")
        return profile

    def remove(self, name: str) -> None:
        """Delete product `name`; works on a broken folder too. The folder is renamed away before deletion."""
        folder = self._folder(name)
        if not folder.is_dir():
            raise self._unknown(name)
        trash = folder.with_name(f".{name}.{secrets.token_hex(4)}.removed")
        os.rename(folder, trash)
        shutil.rmtree(trash)

    def training_folder(self, name: str, part: str = LEARNED_DIR) -> Path:
        """Where `product learn` trains one part (resumable) before the model moves into the product."""
        return self.root / f".{check_name(name)}.{'learning' if part == LEARNED_DIR else part}"

    def attach(self, name: str, part: str, trained: Path, describe: dict, key: str, thresholds: dict,
               scales: dict[str, ModeScale], cleanup: Path | None = None) -> ProductProfile:
        """Move a trained model (`part`: LEARNED_DIR or PROMPTS_DIR) into the product with its thresholds under `key`.

        `scales` are the fused parts' good-part scales the thresholds were calibrated on.

        The files are staged beside the product and renamed in, and the profile is
        rewritten atomically; `cleanup` (the training folder) goes last.
        """
        profile = self.load(name)
        target = profile.folder / part
        staging = profile.folder / f".{part}.{secrets.token_hex(4)}.tmp"
        staging.mkdir()
        for file in MODEL_FILES[part]:
            shutil.copy2(trained / file, staging / file)
        if target.exists():
            shutil.rmtree(target)
        os.rename(staging, target)
        setattr(profile, "learned" if part == LEARNED_DIR else "prompts", describe)
        profile.thresholds = {**profile.thresholds, key: thresholds}
        profile.fusion = {**(profile.fusion or {}), key: {mode: scale.to_dict() for mode, scale in scales.items()}}
        write_json(profile.folder / PROFILE_FILE, profile.to_dict())
        shutil.rmtree(cleanup or trained, ignore_errors=True)
        return profile

    def scorer(self, name: str, source: FeatureSource, progress: bool = True) -> ReferenceScorer:
        """The product's fitted reference scorer for `source` (its bank for `source.name`).

        Built-in features are rebuilt at the resolution and grid the bank was fitted at.
        """
        profile = self.load(name)
        if source.name not in profile.features:
            raise ProductError(
                f"product {name!r} has no bank for the {source.name!r} feature source (it has: {', '.join(profile.features)}); "
                f"score with --features {profile.features[0]}, or rebuild the product from its good images with "
                f"{source.name} features (`anomaly-vlm product add {name} ... --replace`)"
            )
        path = profile.folder / f"bank-{source.name}.safetensors"
        try:
            with safe_open(str(path), framework="pt") as bank:
                meta = json.loads((bank.metadata() or {})[STATE_KEY])
                tensors = {key: bank.get_tensor(key) for key in bank.keys()}
        except (OSError, SafetensorError, KeyError, json.JSONDecodeError) as exc:
            raise ProductError(f"{path}: unreadable reference bank ({exc!r}); rebuild the product with `anomaly-vlm product add {name} ... --replace`") from None
        if source.name == "builtin":  # no weights: the bank says which resolution and grid it was fitted at
            source = BuiltinFeatures.described(meta.get("source", {}) or source.describe())
        try:
            scorer = ReferenceScorer.from_state(source, tensors, meta, progress)
        except CheckpointError as exc:
            raise CheckpointError(f"product {name!r} ({path}): {exc}") from None
        if scorer.references_digest != profile.reference_digest:
            raise ProductError(f"{path}: this bank was fitted on other references than {PROFILE_FILE} records; rebuild the product")
        return scorer
