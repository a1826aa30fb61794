#!/usr/bin/env bash
# FewRel-16: ERNIE-KG vs the text-only baseline, open and closed KG, 3 seeds.
#
#   experiments/run_fewrel16.sh            # (in the background: nohup ... > runs/fewrel16.log &)
#
# 1. Splits ../shared/data/fewrel/fewrel16.json 70/10/20 into train/dev/test (stratified,
#    split seed 0) under runs/fewrel16/split/.
# 2. Runs experiments/relation_classification.py for every (setting, model, seed) into
#    runs/fewrel16/<setting>-<model>-seed<S>/; the closed setting adds the test split's
#    facts and names (--kg-extra test.json), the open one holds train facts + CoDEx-M.
#    The baseline never reads the KG, so by default it runs once per seed (open) and its
#    results stand for both settings; BASELINE_PER_SETTING=1 runs it in both (12 runs).
# 3. Scores every model on test with `ernie-kg evaluate` (the model's own linker, no gold
#    QIDs) into .../test_metrics.json.
# 4. Builds results/fewrel16.md, results/fewrel16_summary.json and the PNG plots.
#
# Runs whose metrics.json (and test_metrics.json) exist are skipped, so the grid can be
# built over several sessions; a killed run resumes from its last epoch checkpoint.
# Environment: SEEDS ("0 1 2"), SETTINGS ("open closed"), MODELS ("baseline ernie"),
# FEWREL16 (data file), SPLIT_SEED (0), DATASET (its name in the results, "FewRel-16"),
# NOTE (a paragraph under the results' title), RUNS, RESULTS (output prefix), EPOCHS,
# EXTRA_ARGS (passed to the experiment), PYTHON.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
ERNIE_KG="${ERNIE_KG:-$ROOT/.venv/bin/ernie-kg}"
DATA="${FEWREL16:-$ROOT/../shared/data/fewrel/fewrel16.json}"
RUNS="${RUNS:-$ROOT/runs/fewrel16}"
RESULTS="${RESULTS:-$ROOT/results/fewrel16}"
SPLIT="$RUNS/split"
SEEDS="${SEEDS:-0 1 2}"
SETTINGS="${SETTINGS:-open closed}"
MODELS="${MODELS:-baseline ernie}"
EPOCHS_ARGS=()
if [[ -n "${EPOCHS:-}" ]]; then EPOCHS_ARGS=(--epochs "$EPOCHS"); fi
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"

if [[ ! -f "$SPLIT/test.json" ]]; then
  "$PYTHON" experiments/split_fewrel.py --data "$DATA" --output-dir "$SPLIT" \
    --seed "${SPLIT_SEED:-0}"
fi

for seed in $SEEDS; do
  for setting in $SETTINGS; do
    for model in $MODELS; do
      if [[ "$model" == baseline && "$setting" != open && "${BASELINE_PER_SETTING:-0}" != 1 ]]; then
        continue  # the baseline reads no KG: its open run stands for every setting
      fi
      out="$RUNS/$setting-$model-seed$seed"
      kg_extra=()
      if [[ "$setting" == closed ]]; then kg_extra=(--kg-extra "$SPLIT/test.json"); fi
      if [[ -f "$out/metrics.json" ]]; then
        echo "skip $out (metrics.json exists)"
      else
        echo "run $out ($(date), load: $(cut -d' ' -f1-3 /proc/loadavg))"
        "$PYTHON" experiments/relation_classification.py --train "$SPLIT/train.json" \
          --dev "$SPLIT/dev.json" --kg-setting "$setting" --model "$model" --seed "$seed" \
          --output-dir "$out" "${kg_extra[@]}" "${EPOCHS_ARGS[@]}" "${EXTRA[@]}" \
          --no-progress
      fi
      if [[ ! -f "$out/test_metrics.json" ]]; then
        "$ERNIE_KG" evaluate --model "$out/model" --data "$SPLIT/test.json" \
          --output "$out/test_metrics.json"
      fi
    done
  done
done

"$PYTHON" experiments/summarize_fewrel16.py --runs "$RUNS" --output "$RESULTS" \
  --dataset "${DATASET:-FewRel-16}" --split-seed "${SPLIT_SEED:-0}" --note "${NOTE:-}"
