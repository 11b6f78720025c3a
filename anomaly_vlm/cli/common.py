"""What the inspecting commands share: their inputs, their Inspector, and how they print outcomes."""

from __future__ import annotations

import argparse
import sys

from ..errors import AnomalyVLMError, DatasetError
from .options import (ASSISTANT, LOCALIZER, PROPOSALS, add_options, assistant_options, configured, generation_settings,
                      input_options, scorer_options, verdict_config)


def load_references(paths: list[str], shots: int | None) -> list:
    from ..io import collect_samples, load_image

    images = []
    for sample in collect_samples(paths)[:shots]:
        try:
            images.append(load_image(sample.path))
        except AnomalyVLMError as exc:
            print(f"skipped reference: {exc}", file=sys.stderr)
    if not images:
        raise DatasetError(f"no usable reference images in {', '.join(paths)}")
    return images


def inputs(args: argparse.Namespace) -> tuple[list | None, str | None]:
    """The references (loaded) and product name of an inspecting command."""
    given = input_options(args)
    if given.references and given.product:
        raise AnomalyVLMError("give --references or --product, not both (a product holds its own references)")
    return (load_references(given.references, given.shots) if given.references else None), given.product


def inspector(args: argparse.Namespace, progress: bool = False):
    """The Inspector every inspecting command shares, from the options generated from its configs."""
    from ..engine import EngineConfig
    from ..inspector import Inspector, InspectorConfig
    from ..io import ImageLimits
    from ..proposals import ProposalConfig
    from ..ray_engine import RayConfig

    return Inspector(InspectorConfig(scorer=scorer_options(args, progress), verdicts=verdict_config(args),
                                     assistant=assistant_options(args), generation=generation_settings(args),
                                     engine=configured(args, EngineConfig), ray=configured(args, RayConfig),
                                     limits=configured(args, ImageLimits), proposals=configured(args, ProposalConfig)))


def inspecting(parser: argparse.ArgumentParser, max_new_tokens: int | None = None, assistant: bool = True) -> None:
    """The localizer options every inspecting command takes, and the assistant's where one answers."""
    add_options(parser.add_argument_group("localizer"), LOCALIZER)
    add_options(parser.add_argument_group("regions"), PROPOSALS)
    if assistant:
        add_options(parser.add_argument_group("assistant"), ASSISTANT,
                    **({"max_new_tokens": max_new_tokens} if max_new_tokens else {}))


def print_notices(notices: list[str]) -> None:
    for notice in notices:
        print(notice, file=sys.stderr)


def print_failures(failures: list[dict]) -> None:
    for failure in failures:
        print(f"failed ({failure.get('kind', 'unreadable')}): {failure['error']}", file=sys.stderr)


def counts_line(batch) -> str:
    from ..verdicts import count_verdicts

    counts = count_verdicts([i.verdict for i in batch.inspections])
    kinds = [f.get("kind") for f in batch.failures]
    return (f"{len(batch.inspections)} inspected: {counts['fail']} FAIL, {counts['review']} REVIEW, "
            f"{counts['pass']} PASS; {kinds.count('unreadable')} unreadable, {kinds.count('unscored')} could not "
            f"be scored ({batch.reused} reused from earlier runs, {len(batch.scored) - batch.reused} scored now)")


def print_models(batch, assistant: dict | None = None) -> None:
    """Which localizer, thresholds (and assistant) a batch ran with."""
    from ..assistant.backends import describe_assistant
    from ..localizer import describe_models
    from ..verdicts import describe_thresholds

    if batch.scored:
        print(f"localizer: {describe_models(batch.scored[0].record.models)}")
    print(f"thresholds: {describe_thresholds(batch.thresholds.to_dict())}")
    if assistant:
        print(f"assistant: {describe_assistant(assistant)}")
