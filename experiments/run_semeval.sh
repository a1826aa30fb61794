#!/usr/bin/env bash
# SemEval-2010 Task 8: ERNIE-KG vs the text-only baseline where the KG has little to say.
#
#   experiments/run_semeval.sh             # (in the background: nohup ... > runs/semeval.log &)
#
# The FewRel-16 grid (experiments/run_fewrel16.sh) on ../shared/data/semeval, open KG only,
# 3 seeds: SemEval's entities are common nouns whose "ids" are the nouns themselves, so
# its own pairs stay out of the KG (--no-train-facts) and both models see the FewRel-16
# open KG (the FewRel-16 training split's facts + CoDEx-M), entities found by the linker
# alone (--train-entities linker). Results: results/semeval.md. Environment as in
# run_fewrel16.sh (SEEDS, MODELS, RUNS, RESULTS, EXTRA_ARGS, PYTHON).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
FEWREL_SPLIT="${FEWREL_SPLIT:-$ROOT/runs/fewrel16/split}"
if [[ ! -f "$FEWREL_SPLIT/train.json" ]]; then
  "$PYTHON" experiments/split_fewrel.py --data "$ROOT/../shared/data/fewrel/fewrel16.json" \
    --output-dir "$FEWREL_SPLIT" --seed 0
fi
FEWREL16="${SEMEVAL:-$ROOT/../shared/data/semeval/semeval_fewrel_format.json}" \
SETTINGS=open DATASET="SemEval-2010 Task 8" \
RUNS="${RUNS:-$ROOT/runs/semeval}" RESULTS="${RESULTS:-$ROOT/results/semeval}" \
NOTE="${NOTE:-KG: the FewRel-16 open KG (its training split's facts + CoDEx-M), entities from the linker only; SemEval's own pairs are not KG facts.}" \
EXTRA_ARGS="--no-train-facts --kg-extra $FEWREL_SPLIT/train.json --train-entities linker ${EXTRA_ARGS:-}" \
  exec "$ROOT/experiments/run_fewrel16.sh"
