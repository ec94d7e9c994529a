#!/usr/bin/env bash
# Reproduces the analogue of Zeldes et al. (2018) Table 1 on generated data:
# REG, MDN and DDN, each tuned with the same keras-tuner budget, on a noisy D1-like
# and a significant D2-like marketplace; prints the comparison tables.
#   bash docs/experiments/table1.sh            # defaults below
#   ROWS=1000000 TRIALS=10 bash docs/experiments/table1.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
TFDDN=${TFDDN:-.venv/bin/tfddn}
OUT=${OUT:-runs/table1}
ROWS=${ROWS:-100000}
TRIALS=${TRIALS:-4}
TRIAL_EPOCHS=${TRIAL_EPOCHS:-3}
EPOCHS=${EPOCHS:-10}
SEED=${SEED:-0}
for regime in d1 d2; do
  d="$OUT/$regime"
  $TFDDN generate --out_dir "$d/logs" --rows "$ROWS" --regime "$regime" --seed "$SEED" --quiet
  $TFDDN preprocess --input "$d/logs/logs.csv" --spec "$d/logs/spec.json" --output "$d/data" \
    --overwrite > "$d/preprocess.log" 2>&1
  for kind in reg mdn ddn; do
    echo "== $regime $kind"
    $TFDDN tune --data_dir "$d/data" --run_dir "$d/$kind" --kind "$kind" --max_trials "$TRIALS" \
      --trial_epochs "$TRIAL_EPOCHS" --epochs "$EPOCHS" --patience 2 --seed "$SEED" --verbose 2 \
      > "$d/$kind.log" 2>&1
    $TFDDN evaluate --run_dir "$d/$kind" --data_dir "$d/data" \
      --ground_truth "$d/logs/ground_truth.parquet" > "$d/$kind.eval.log" 2>&1
  done
done
.venv/bin/python - "$OUT" <<'PY'
import json, sys
from tfddn.report import compare_runs
out = sys.argv[1]
for regime in ("d1", "d2"):
    runs = {kind.upper(): json.load(open(f"{out}/{regime}/{kind}/evaluation/metrics.json"))
            for kind in ("reg", "mdn", "ddn")}
    print(f"\n### {regime.upper()}\n")
    print(compare_runs(runs, baseline="MDN"))
PY
