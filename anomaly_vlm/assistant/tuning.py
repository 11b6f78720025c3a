"""LoRA (and, on CUDA, QLoRA) tuning of the assistant on synthesized conversations.

The loss covers the answers only: the system prompt, the findings block and the
questions are context, not targets. Training resumes from the last saved step with
the same data order, so a killed run loses at most `save_every` steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from ..errors import AnomalyVLMError, DatasetError
from ..files import sweep_temporaries, write_json
from ..training_state import load_state, save_state
from .adapters import Scope, add_adapter
from .backends import AssistantOptions, load_model
from .prompting import as_text_messages

IGNORE = -100
CHECKPOINT = "checkpoint"
PER_TOKEN = ("mm_token_type_ids", "token_type_ids")
"""Processor outputs with one value per token (Qwen2-VL's M-RoPE reads which tokens are image tokens): they
follow input_ids through the conversation, the cut at max_length and the padding, with 0 for text tokens."""


@dataclass
class TuneConfig:
    """The LoRA fields are PEFT's `LoraConfig` names; `scope` picks its target modules."""

    epochs: int = field(default=1, metadata={"help": "passes over the conversations"})
    batch_size: int = field(default=4, metadata={"help": "conversations per optimizer step"})
    lr: float = field(default=2e-4, metadata={"help": "peak learning rate (linear warm-up and decay)"})
    warmup: float = field(default=0.05, metadata={"help": "fraction of steps spent warming up"})
    max_length: int = field(default=768, metadata={"help": "tokens per conversation; longer ones are cut"})
    max_samples: int | None = field(default=None, metadata={"help": "use only the first N conversations"})
    seed: int = field(default=0, metadata={"help": "data order and LoRA initialisation"})
    save_every: int = field(default=50, metadata={"help": "steps between resumable checkpoints"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    precision: Literal["fp32", "bf16"] = field(
        default="bf16", metadata={"help": "bf16 autocast halves step time on CPUs with AVX-512 BF16 and on GPUs"})
    r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = lora_alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    loss_per: Literal["answer", "token"] = field(default="answer", metadata={
        "help": "answer: every answer weighs the same, so a one-letter MMAD answer counts as much as a paragraph; "
                "token: the mean over all answer tokens"})
    scope: Scope = field(default="language", metadata={
        "help": "language: the LM's projections only (vision tower and projector frozen); all: every matching projection"})


def read_conversations(data: str | Path):
    """The synthesized dataset in `data` (the `synth --out` folder or its `dataset/`)."""
    from datasets import load_from_disk

    data = Path(data)
    folder = data / "dataset" if (data / "dataset").is_dir() else data
    try:
        dataset = load_from_disk(str(folder))
    except (FileNotFoundError, ValueError) as exc:
        raise DatasetError(f"{data}: not a synthesized dataset (run `anomaly-vlm synth --out {data}`): {exc}") from None
    if "messages" not in dataset.column_names:
        raise DatasetError(f"{folder}: has no 'messages' column")
    return dataset


def clean_messages(messages: list[dict]) -> list[dict]:
    """Arrow stores image parts with text None; templates expect the key absent."""
    return [{"role": m["role"], "content": [{k: v for k, v in p.items() if v is not None} for p in m["content"]]}
            for m in messages]


def answer_pieces(messages: list[dict], render: Callable[[list[dict], bool], str]) -> list[tuple[str, bool]]:
    """The rendered conversation cut at turn boundaries; True marks an answer (a training target).

    `render(messages, add_generation_prompt)` is the chat template. The cut relies on the
    template rendering a conversation's prefix as a prefix of its text, which chat
    templates are built to do; one that does not is refused rather than mis-trained.
    """
    pieces, done = [], ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt, full = render(messages[:i], True), render(messages[: i + 1], False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise ValueError("the chat template does not render conversation prefixes as prefixes; cannot mask answers")
        pieces += [(prompt[len(done):], False), (full[len(prompt):], True)]
        done = full
    return pieces


class ConversationEncoder:
    """Token ids and answer-only labels for one conversation, for a tokenizer or a processor."""

    def __init__(self, preprocessor, images: bool, max_length: int):
        self.preprocessor, self.images, self.max_length = preprocessor, images, max_length
        self.tokenizer = getattr(preprocessor, "tokenizer", preprocessor)

    def _render(self, messages: list[dict], generation: bool) -> str:
        shown = messages if self.images else as_text_messages(messages)
        return self.preprocessor.apply_chat_template(shown, add_generation_prompt=generation, tokenize=False)

    def __call__(self, messages: list[dict], images: list | None = None) -> dict[str, Any]:
        import torch

        ids, labels, extra, per_token = [], [], {}, {}
        for n, (text, target) in enumerate(answer_pieces(clean_messages(messages), self._render)):
            if n == 0 and self.images:
                encoded = self.preprocessor(text=[text], images=images or None, return_tensors="pt")
                piece = encoded["input_ids"][0].tolist()
                per_token = {k: encoded[k][0].tolist() for k in PER_TOKEN if k in encoded}
                extra = {k: v for k, v in encoded.items() if k not in ("input_ids", "attention_mask", *PER_TOKEN)}
            else:
                piece = self.tokenizer(text, add_special_tokens=False)["input_ids"]
                for values in per_token.values():
                    values += [0] * len(piece)
            ids += piece
            labels += piece if target else [IGNORE] * len(piece)
        ids, labels = ids[: self.max_length], labels[: self.max_length]
        per_token = {k: torch.tensor(v[: self.max_length]) for k, v in per_token.items()}
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), **per_token, **extra}


def collate(items: list[dict], pad_id: int) -> dict:
    """Right-padded batch; image tensors of all items are concatenated."""
    import torch

    length = max(len(item["input_ids"]) for item in items)
    batch = {
        "input_ids": torch.full((len(items), length), pad_id, dtype=torch.long),
        "labels": torch.full((len(items), length), IGNORE, dtype=torch.long),
        "attention_mask": torch.zeros((len(items), length), dtype=torch.long),
    }
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        batch["input_ids"][row, :n] = item["input_ids"]
        batch["labels"][row, :n] = item["labels"]
        batch["attention_mask"][row, :n] = 1
    for key in items[0]:
        if key in PER_TOKEN:
            batch[key] = torch.zeros((len(items), length), dtype=items[0][key].dtype)
            for row, item in enumerate(items):
                batch[key][row, : len(item[key])] = item[key]
        elif key not in batch:
            batch[key] = torch.cat([item[key] for item in items])
    return batch


def answer_weights(targets, per: str = "answer"):
    """Per-token loss weights summing to 1 over the batch: equal per answer (a run of target tokens) or per token.

    Under a token mean a one-letter answer next to paragraph answers gets a few
    percent of the gradient, and a small model then never learns to pick the letter.
    """
    import torch

    answer = targets != IGNORE
    if per == "token":
        return answer.float() / answer.sum().clamp_min(1)
    before = torch.nn.functional.pad(answer[:, :-1], (1, 0), value=False)
    run = torch.cumsum((answer & ~before).flatten().long(), 0).view_as(answer) * answer  # 1, 2, ... per answer
    lengths = torch.bincount(run.flatten()).float()  # lengths[k]: tokens of answer k
    return torch.where(answer, 1.0 / (lengths[run] * max(len(lengths) - 1, 1)), torch.zeros(()))


def answer_loss(model, batch: dict, per: str = "answer"):
    """Next-token loss over answer tokens (weighted by `answer_weights`), computing logits only where one follows.

    The vocabulary projection is a fifth of a small LM's compute; most positions are
    prompt, so skipping them makes a step markedly cheaper than the library loss.
    """
    import torch.nn.functional as F

    inputs = {k: v for k, v in batch.items() if k != "labels"}
    targets = batch["labels"][:, 1:]
    keep = (targets != IGNORE).any(dim=0).nonzero().squeeze(1)
    logits = model(**inputs, logits_to_keep=keep).logits
    weights = answer_weights(targets, per)[:, keep]  # runs found before columns are dropped, so none merge
    losses = F.cross_entropy(logits.flatten(0, 1).float(), targets[:, keep].flatten(), ignore_index=IGNORE,
                             reduction="none")
    return (losses * weights.flatten().to(losses.device)).sum()


def encode_all(dataset, encode: ConversationEncoder, progress: bool = True) -> list[dict]:
    """Every conversation encoded; those cut so short that no answer token is left are dropped, with a message."""
    encoded = [encode(row["messages"], row.get("images"))
               for row in tqdm(dataset, desc="encoding", unit="conversation", disable=not progress)]
    kept = [item for item in encoded if (item["labels"] != IGNORE).any()]
    if not kept:
        raise DatasetError(f"no conversation has an answer within --max-length {encode.max_length}")
    if len(kept) < len(encoded):
        print(f"{len(encoded) - len(kept)} of {len(encoded)} conversations have no answer within "
              f"--max-length {encode.max_length}; they are left out")
    return kept


@dataclass
class TuneResult:
    out: Path
    steps: int
    losses: list[float]


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffled batches of similar length: little padding, and the same order on resume."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    pool = 16 * batch_size
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches += [[int(i) for i in chunk[k : k + batch_size]] for k in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _lr_factor(step: int, total: int, warmup: float) -> float:
    warm = max(1, math.ceil(warmup * total))
    return (step + 1) / warm if step < warm else max(0.0, (total - step) / max(1, total - warm))


def tune(options: AssistantOptions, data: str | Path, out: str | Path, config: TuneConfig = TuneConfig(),
         resume: bool = False, progress: bool = True, model_and_preprocessor: tuple | None = None) -> TuneResult:
    """Train a LoRA adapter; write it to `out` (adapter_model.safetensors, adapter_config.json, tune.json).

    `model_and_preprocessor` replaces loading by `options` (tests pass tiny models here).
    """
    import torch
    from accelerate import Accelerator
    from peft import LoraConfig, get_peft_model_state_dict, set_peft_model_state_dict

    out = Path(out)
    dataset = read_conversations(data)
    if config.max_samples:
        dataset = dataset.select(range(min(config.max_samples, len(dataset))))
    torch.manual_seed(config.seed)
    if model_and_preprocessor is None:
        model, preprocessor, info = load_model(options, for_training=True)
    else:
        (model, preprocessor), info = model_and_preprocessor, {"backend": options.backend, "model": "given"}
    encode = ConversationEncoder(preprocessor, options.backend == "vlm", config.max_length)
    encoded = encode_all(dataset, encode, progress)
    lengths = [len(item["input_ids"]) for item in encoded]
    pad_id = encode.tokenizer.pad_token_id if encode.tokenizer.pad_token_id is not None else encode.tokenizer.eos_token_id
    if options.quantize:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    lora = LoraConfig(r=config.r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout)
    model = add_adapter(model, lora, config.scope)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=0.0)
    steps_per_epoch = math.ceil(len(encoded) / config.batch_size)
    total = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, total, config.warmup))
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    model, optimizer = accelerator.prepare(model, optimizer)

    checkpoint = out / CHECKPOINT
    sweep_temporaries(out)
    identity = {**{k: v for k, v in asdict(config).items() if k != "save_every"}, "conversations": len(encoded),
                "base": {k: info.get(k) for k in ("backend", "model")}}
    resumed = load_state(checkpoint, identity, optimizer, scheduler) if resume else None
    start, losses, skipped = 0, [], []
    if resumed is not None:
        set_peft_model_state_dict(accelerator.unwrap_model(model), resumed.tensors["adapter"])
        start, losses, skipped = resumed.meta["step"], resumed.meta["losses"], resumed.meta["skipped"]

    model.train()
    bar = tqdm(total=total, initial=start, desc="tuning", unit="step", disable=not progress)
    for step in range(start, total):
        epoch, index = divmod(step, steps_per_epoch)
        batch = collate([encoded[i] for i in epoch_batches(lengths, config.batch_size, config.seed, epoch)[index]], pad_id)
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        with torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
            loss = answer_loss(model, batch, config.loss_per)
        if torch.isfinite(loss):
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
            optimizer.step()
            losses.append(round(float(loss.detach()), 5))
        else:
            skipped.append(step)
            if len(skipped) >= 3 and skipped[-3:] == list(range(step - 2, step + 1)):
                raise AnomalyVLMError(f"tuning loss is not finite at steps {skipped[-3:]}; "
                                      "try --precision fp32 or a lower --lr")
        scheduler.step()
        optimizer.zero_grad()
        bar.update()
        bar.set_postfix(loss=f"{losses[-1]:.3f}" if losses else "-", skipped=len(skipped))
        if (step + 1) % config.save_every == 0 and step + 1 < total:
            adapter = get_peft_model_state_dict(accelerator.unwrap_model(model))
            save_state(checkpoint, identity, {"adapter": adapter}, optimizer,
                       {"step": step + 1, "losses": losses, "skipped": skipped}, scheduler)
    bar.close()
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.save_pretrained(str(out), safe_serialization=True)
    write_json(out / "tune.json", {"format": 1, "base": info, "data": str(data), "conversations": len(encoded),
                                   "steps": total, "losses": losses, "skipped_steps": skipped,
                                   "config": asdict(config)})
    return TuneResult(out, total, losses)
