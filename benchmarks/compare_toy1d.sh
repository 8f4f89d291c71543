#!/usr/bin/env bash
# Table 2 / Fig. 4 on the 1D toy: every method, 3 seeds, the default budget (7500 NREs), 2 parallel jobs.
# Writes runs/bench-compare-toy1d/{table.md,table.csv,compare.png} and prints the wall time.
# SMOKE=1 runs a 500-NRE version (a minute) for CI.
set -euo pipefail
out=${OUT:-runs/bench-compare-toy1d}
budget=()
if [[ "${SMOKE:-0}" == "1" ]]; then budget=(--budget 500); out=${OUT:-runs/bench-compare-toy1d-smoke}; fi
start=$(date +%s)
python -m banel.cli compare toy1d --methods banel,reinforce,negrl,gfn,rnd,count,temperature,base \
  --seeds 0-2 --jobs "${JOBS:-2}" "${budget[@]}" --out "$out"
echo "wall seconds: $(( $(date +%s) - start ))" | tee "$out/wall_seconds.txt"
