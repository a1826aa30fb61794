#!/usr/bin/env bash
# Aspect-based sentiment (Sun et al. 2019): every (dataset, setting, seed) through
# experiments/absa.py, then results/absa.{md,json,png}.
#
#   experiments/run_absa.sh          # (in the background: nohup ... > runs/absa.log &)
#   SEEDS=0 SETTINGS="qa_m nli_m" DATASETS=semeval experiments/run_absa.sh
#
# Runs go to RUNS/<dataset>-<setting>-seed<S>/; those whose metrics.json exists are skipped,
# so the grid can be built over several sessions, and a killed run resumes from its last
# epoch checkpoint. Minutes per run, extrapolated from a measured smoke run (--threads 1,
# load 2.5-3 on 2 cores; at load 5 about 1.6x these): single 15 (SemEval) / 20 (SentiHood),
# nli_m 16 / 24, qa_m 22 / 30, nli_b 85 / 77, qa_b 109 / 95 (one example per label).
# Environment: SEEDS ("0 1 2"), SETTINGS ("single qa_m nli_m qa_b nli_b"), DATASETS
# ("sentihood semeval"), RUNS (runs/absa), RESULTS (results/absa), EXTRA_ARGS (passed to
# every run, e.g. "--threads 1" or "--post-trained DIR"), PYTHON.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
RUNS="${RUNS:-runs/absa}"
RESULTS="${RESULTS:-results/absa}"
SEEDS="${SEEDS:-0 1 2}"
SETTINGS="${SETTINGS:-single qa_m nli_m qa_b nli_b}"
DATASETS="${DATASETS:-sentihood semeval}"
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"

for seed in $SEEDS; do
  for dataset in $DATASETS; do
    for setting in $SETTINGS; do
      out="$RUNS/$dataset-$setting-seed$seed"
      if [[ -f "$out/metrics.json" ]]; then
        echo "skip $out (metrics.json exists)"
        continue
      fi
      echo "run $out ($(date), load: $(cut -d' ' -f1-3 /proc/loadavg))"
      "$PYTHON" experiments/absa.py --dataset "$dataset" --setting "$setting" \
        --seed "$seed" --output-dir "$out" "${EXTRA[@]}" --no-progress
    done
  done
done

"$PYTHON" experiments/summarize_absa.py --runs "$RUNS" --output "$RESULTS"
