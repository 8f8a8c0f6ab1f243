#!/usr/bin/env bash
# Peer predictions for the held-out Kang benchmark: scGen (pertpy) and scArches' TRVAE, all 7 cell
# types x seeds 0 1 2. Usage: bash benchmarks/peers/run.sh [OUT_DIR]
# (default OUT_DIR: benchmarks/peers/predictions). Runs whose .npz exists are skipped, so an
# interrupted run resumes; delete OUT_DIR/<peer> to redo a peer.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$HERE/predictions}"
CELL_TYPES=(B CD14+Mono CD4T CD8T Dendritic FCGR3A+Mono NK)
read -r -a SEEDS <<< "${SEEDS:-0 1 2}"  # e.g. SEEDS="0" bash run.sh

bash "$HERE/setup.sh"
mkdir -p "$OUT"
start=$(date +%s)
"$HERE/.venv-scgen/bin/python" "$HERE/predict_scgen.py" \
    --cell-types "${CELL_TYPES[@]}" --seeds "${SEEDS[@]}" --out "$OUT" 2>&1 \
    | tee "$OUT/scgen.log" | grep --line-buffered '^\[scgen\]' || echo "[run] scgen failed; see $OUT/scgen.log"
"$HERE/.venv-scarches/bin/python" "$HERE/predict_scarches_trvae.py" \
    --cell-types "${CELL_TYPES[@]}" --seeds "${SEEDS[@]}" --out "$OUT" 2>&1 \
    | tee "$OUT/scarches_trvae.log" | grep --line-buffered '^\[scarches_trvae\]' \
    || echo "[run] scarches_trvae failed; see $OUT/scarches_trvae.log"
n=$(ls "$OUT"/scgen/*_seed*.npz "$OUT"/scarches_trvae/*_seed*.npz 2>/dev/null | wc -l)
echo "[run] $n of 42 prediction files in $OUT ($(( $(date +%s) - start )) s)"
[ "$n" -eq 42 ]
