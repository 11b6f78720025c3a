"""Command-line options generated from the typed configs, so each default and help text lives in one place.

A flag is a dataclass field: its type gives the parser (Literal: choices, bool: a
switch, tuple or list: several values), its `help` metadata the help text, and the
dataclass the default. Options left out on the command line stay at the dataclass
default, so the CLI never repeats one.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from typing import Any, Callable, Literal, Union

from ..assistant.backends import AssistantOptions, GenerationSettings
from ..clip import BackboneConfig
from ..localizer import DEFAULT_WEIGHTS, FusionConfig, LocalizerConfig, ScorerOptions
from ..localizer.features import BuiltinFeatureConfig
from ..engine import EngineConfig
from ..localizer.learned_config import LearnConfig
from ..localizer.product_prompts import ProductPromptConfig
from ..proposals import ProposalConfig
from ..ray_engine import RayConfig
from ..verdicts import VerdictConfig


@dataclass(frozen=True)
class Option:
    """One field of `config` offered as `--flag` (default: the field name with dashes); `renamed`: old flags still read."""

    config: type
    name: str
    flag: str | None = None
    parse: Callable[[str], Any] | None = None
    renamed: tuple[str, ...] = ()

    @property
    def dest(self) -> str:
        return f"{self.config.__name__}.{self.name}"

    @property
    def field(self) -> Field:
        return next(f for f in fields(self.config) if f.name == self.name)


def _unwrap_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return options[0] if len(options) == 1 else str
    return hint


def _default_text(item: Field, default: Any = MISSING) -> str:
    if default is MISSING:
        default = item.default if item.default is not MISSING else (
            item.default_factory() if item.default_factory is not MISSING else None)
    if default in (None, (), [], {}):
        return ""
    if isinstance(default, (tuple, list)):
        default = ",".join(map(str, default))
    return f" (default: {default})"


def add_options(parser: argparse._ActionsContainer, options: list[Option], **defaults: Any) -> None:
    """Add each option; `defaults` (by field name) replace the dataclass default for this command."""
    for option in options:
        item = option.field
        hint = _unwrap_optional(typing.get_type_hints(option.config)[option.name])
        default = defaults.get(option.name, MISSING)
        kwargs: dict[str, Any] = {"dest": option.dest,
                                  "default": argparse.SUPPRESS if default is MISSING else default,
                                  "help": item.metadata.get("help", "") + _default_text(item, default)}
        origin = typing.get_origin(hint)
        if option.parse:
            kwargs["type"] = option.parse
        elif hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is Literal:
            kwargs["choices"] = list(typing.get_args(hint))
        elif origin in (list, tuple):
            item_type = typing.get_args(hint)[0] if typing.get_args(hint) else str
            kwargs.update(nargs="+", type=item_type if item_type in (int, float) else str)
        elif hint in (int, float, str):
            kwargs["type"] = hint
        if "action" not in kwargs and "choices" not in kwargs:
            kwargs["metavar"] = option.name.upper()
        flag = option.flag or f"--{option.name.replace('_', '-')}"
        parser.add_argument(flag, **kwargs)
        for old in option.renamed:
            parser.add_argument(old, **{**kwargs, "help": argparse.SUPPRESS}, action=_Renamed, replacement=flag)


class _Renamed(argparse.Action):
    """An old flag that still works, with a notice naming its new spelling."""

    def __init__(self, option_strings, dest, replacement: str, **kwargs):
        kwargs.pop("metavar", None)
        super().__init__(option_strings, dest, **kwargs)
        self.replacement = replacement

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"note: {option_string} is deprecated and will be removed; use {self.replacement}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def given(args: argparse.Namespace, config: type) -> dict[str, Any]:
    """The fields of `config` set on the command line."""
    prefix = f"{config.__name__}."
    return {dest[len(prefix):]: value for dest, value in vars(args).items() if dest.startswith(prefix)}


def configured(args: argparse.Namespace, config: type, base: Any = None, **changes: Any) -> Any:
    """`base` (or the dataclass defaults) with the fields given on the command line."""
    values = {**given(args, config), **changes}
    return replace(base, **values) if base is not None else config(**values)


def threshold_value(text: str) -> float | None:
    """'auto' (calibrated) or a score in [0, 1]."""
    if text.strip().lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a threshold is a score in [0, 1], got {value}")
    return value


def fusion_weights(text: str) -> dict[str, float]:
    weights = {}
    for item in text.split(","):
        mode, _, value = item.partition("=")
        try:
            weights[mode.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected MODE=WEIGHT pairs like prompt=1,mutual=0.5, got {item!r}") from None
    return weights


def layer_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 1-based block numbers like 6,12,18,24, got {text!r}") from None


@dataclass
class InputOptions:
    """What an inspection compares with: known-good references or a saved product."""

    references: list[str] = field(default_factory=list, metadata={
        "help": "known-good images or folders for reference (few-shot) scoring"})
    shots: int | None = field(default=None, metadata={"help": "use only the first N reference images (in name order)"})
    product: str | None = field(default=None, metadata={
        "help": "a saved product profile (`anomaly-vlm product add`): its references, thresholds and notes"})


BACKBONE = [Option(BackboneConfig, "name", "--backbone"), Option(BackboneConfig, "weights"),
            Option(BackboneConfig, "image_size"), Option(BackboneConfig, "device"),
            Option(BackboneConfig, "precision", parse=str), Option(LocalizerConfig, "layers", parse=layer_list)]

LOCALIZER = [Option(ScorerOptions, "mode"), *BACKBONE, Option(ScorerOptions, "prompt_checkpoint", renamed=("--prompts",)),
             Option(ScorerOptions, "features"), Option(InputOptions, "references"), Option(InputOptions, "shots"),
             Option(InputOptions, "product"), Option(ScorerOptions, "batch_size"), Option(ScorerOptions, "keep_aspect"),
             Option(BuiltinFeatureConfig, "image_size", "--builtin-size"),
             Option(BuiltinFeatureConfig, "grid_size", "--builtin-grid"),
             Option(BuiltinFeatureConfig, "gain", "--builtin-gain"),
             Option(ScorerOptions, "image_score"),
             Option(FusionConfig, "weights", "--fusion-weights", parse=fusion_weights),
             Option(VerdictConfig, "threshold", parse=threshold_value),
             Option(VerdictConfig, "review_threshold", parse=float), Option(VerdictConfig, "false_alarm_rate"),
             Option(VerdictConfig, "review_rate")]

PROPOSALS = [Option(ProposalConfig, "attributes", "--region-attributes")]
"""What the findings say about each proposed region."""

ENGINE = [Option(EngineConfig, "engine"), Option(RayConfig, "address", "--ray-address"),
          Option(RayConfig, "actors", "--ray-actors"), Option(RayConfig, "gpus_per_actor", "--ray-gpus")]
"""Where batch scoring runs: this process, or a Ray cluster."""

LEARNING = [*(Option(LearnConfig, name, f"--learn-{name.replace('_', '-')}")
              for name in ("steps", "image_size", "content", "seed", "members", "holdout", "threads")),
            Option(ProductPromptConfig, "epochs", "--learn-prompt-epochs"),
            Option(ProductPromptConfig, "windows_per_image", "--learn-prompt-windows")]
"""Learning a product's own localizer, and its prompts where CLIP loads (the rest keeps the configs' defaults)."""

PROMPT_SOURCE = [*BACKBONE, Option(ScorerOptions, "prompt_checkpoint", renamed=("--prompts",))]
"""The CLIP a product's prompts are learned on, and the prompts they start from (fresh ones by default)."""

ASSISTANT = [Option(AssistantOptions, "backend"), Option(AssistantOptions, "model"),
             Option(AssistantOptions, "adapter"),
             Option(AssistantOptions, "device", "--assistant-device"),
             Option(AssistantOptions, "precision", "--assistant-precision"),
             Option(GenerationSettings, "max_new_tokens")]
"""The assistant beside a localizer: its device follows --device unless --assistant-device is given."""

LANGUAGE_MODEL = [Option(AssistantOptions, "backend"), Option(AssistantOptions, "model"),
                  Option(AssistantOptions, "device"), Option(AssistantOptions, "precision", "--assistant-precision")]
"""The assistant alone (tuning and chat evaluation): --device is its own."""


def scorer_options(args: argparse.Namespace, progress: bool) -> ScorerOptions:
    layers = given(args, LocalizerConfig).get("layers")
    weights = given(args, FusionConfig).get("weights")
    return configured(args, ScorerOptions, backbone=given(args, BackboneConfig), builtin=configured(args, BuiltinFeatureConfig),
                      localizer=LocalizerConfig(layers=layers) if layers else None,
                      fusion=FusionConfig({**DEFAULT_WEIGHTS, **weights}) if weights else FusionConfig(),
                      progress=progress)


def verdict_config(args: argparse.Namespace) -> VerdictConfig:
    return configured(args, VerdictConfig)


def assistant_options(args: argparse.Namespace, **changes: Any) -> AssistantOptions:
    """The assistant's options; its device follows the localizer's `--device` unless `--assistant-device` is given."""
    device = given(args, BackboneConfig).get("device")
    if device and "device" not in given(args, AssistantOptions):
        changes.setdefault("device", device)
    return configured(args, AssistantOptions, **changes)


def generation_settings(args: argparse.Namespace) -> GenerationSettings:
    return configured(args, GenerationSettings)


def input_options(args: argparse.Namespace) -> InputOptions:
    return configured(args, InputOptions)
