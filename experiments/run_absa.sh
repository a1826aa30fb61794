#!/usr/bin/env bash
# Aspect-based sentiment (Sun et al. 2019): every (dataset, setting, seed) through
# experiments/absa.py, then results/absa.{md,json,png}.
#
#   experiments/run_absa.sh          # (in the background: nohup ... > runs/absa.log &)
#   SEEDS=0 SETTINGS="qa_m nli_m" DATASETS=semeval experiments/run_absa.sh
#
# Runs go to RUNS/<dataset>-<setting>-seed<S>/; those whose metrics.json exists, or that
# RESULTS.json records (run directories do not outlive a checkout; the summary keeps their
# records), are skipped, so the grid can be built over several sessions, and a killed run
# resumes from its last epoch checkpoint. With POST=DIR, each dataset's backbone is first
# post-trained into DIR/<dataset>-backbone on DIR/<dataset>.txt (experiments/absa_corpus.py:
# training sentences only; `ernie-kg pretrain post-train`, resumed if killed) and the runs,
# named <dataset>-<setting>-post-seed<S>, fine-tune from it.
# Minutes per run, measured (--threads 1, 2-4 runs on 2 AMD EPYC cores; results/absa.md):
# SemEval / SentiHood single 44 / 70, qa_m 46 / 42, nli_m 30 / 44; post-training 1000
# steps about 50; SemEval nli_b 114 (5x nli_m's examples, one per label).
# A faster host of the same CPU name (2026-12-05): SemEval qa_m 17, nli_b 71; SentiHood nli_m 25;
# three runs on its 2 cores at once: SemEval qa_b 113, SentiHood qa_b 103, nli_b 90.
# Environment: SEEDS ("0 1 2"), SETTINGS ("single qa_m nli_m qa_b nli_b"), DATASETS
# ("sentihood semeval"), RUNS (runs/absa), RESULTS (results/absa), POST (none), POST_ARGS
# (passed to `pretrain post-train`, e.g. "--max-steps 300"), EXTRA_ARGS (passed to every
# run, e.g. "--threads 1"), PYTHON, ERNIE_KG (the CLI beside PYTHON).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
RUNS="${RUNS:-runs/absa}"
RESULTS="${RESULTS:-results/absa}"
SEEDS="${SEEDS:-0 1 2}"
SETTINGS="${SETTINGS:-single qa_m nli_m qa_b nli_b}"
DATASETS="${DATASETS:-sentihood semeval}"
ERNIE_KG="${ERNIE_KG:-$(dirname "$PYTHON")/ernie-kg}"
POST="${POST:-}"
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"
read -r -a POST_EXTRA <<< "${POST_ARGS:-}"
RECORDED="$("$PYTHON" experiments/summarize_absa.py --output "$RESULTS" --list-recorded)"

post_trained() {  # the dataset's post-trained backbone, made first when missing
  local dataset="$1" backbone="$POST/$1-backbone"
  if [[ ! -f "$backbone/model.safetensors" ]]; then
    echo "post-train $backbone ($(date), load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    "$PYTHON" experiments/absa_corpus.py --dataset "$dataset" --output "$POST/$dataset.txt" >&2
    "$ERNIE_KG" pretrain post-train --corpus "$POST/$dataset.txt" --output "$backbone" \
      "${POST_EXTRA[@]}" >&2
  fi
  echo "$backbone"
}

for seed in $SEEDS; do
  for dataset in $DATASETS; do
    for setting in $SETTINGS; do
      name="$dataset-$setting${POST:+-post}-seed$seed"
      out="$RUNS/$name"
      if [[ -f "$out/metrics.json" ]]; then
        echo "skip $out (metrics.json exists)"
        continue
      fi
      if grep -qxF "$name" <<< "$RECORDED"; then
        echo "skip $out (recorded in $RESULTS.json)"
        continue
      fi
      post=()
      [[ -n "$POST" ]] && post=(--post-trained "$(post_trained "$dataset")")
      echo "run $out ($(date), load: $(cut -d' ' -f1-3 /proc/loadavg))"
      "$PYTHON" experiments/absa.py --dataset "$dataset" --setting "$setting" \
        --seed "$seed" --output-dir "$out" "${post[@]}" "${EXTRA[@]}" --no-progress
    done
  done
done

"$PYTHON" experiments/summarize_absa.py --runs "$RUNS" --output "$RESULTS"
