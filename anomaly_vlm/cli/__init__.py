"""The `anomaly-vlm` command. Parsing only: the work lives in the library.

Flags are generated from the typed configs (`options`); each command module holds
its commands and their parsers: `inspect` (score, chat, report, app, eval-mmad),
`train` (train-prompts, import-prompts, synth, tune, eval-chat) and `products`.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import AnomalyVLMError


def build_parser() -> argparse.ArgumentParser:
    from . import inspect, products, train

    parser = argparse.ArgumentParser(prog="anomaly-vlm", description="Industrial anomaly inspection with CLIP and LLMs.")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (inspect, train, products):
        module.add_parsers(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:  # defaults from the environment (the app's port) are read, and may be refused, while parsing
        args = build_parser().parse_args(argv)
        return args.func(args)
    except AnomalyVLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
