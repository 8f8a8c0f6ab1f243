#!/usr/bin/env bash
# Peer predictions for the held-out benchmarks: scGen (pertpy), scArches' TRVAE and CPA (cpa-tools)
# on the bundled Kang file (7 cell types) and the glioblastoma data (patients PW034 PW036 PW040),
# seeds 0 1 2.
# Usage: bash benchmarks/peers/run.sh [OUT_DIR]   (default OUT_DIR: benchmarks/peers/predictions)
# Environment: SEEDS (default "0 1 2"), PEERS (default "scgen scarches_trvae cpa"), DATASETS (default
# "kang glioblastoma"). Writes OUT_DIR/<dataset>/<peer>/<group>_seed<S>.npz; runs whose .npz
# exists are skipped, so an interrupted run resumes; delete OUT_DIR/<dataset>/<peer> to redo one.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT="${1:-$HERE/predictions}"
read -r -a SEED_LIST <<< "${SEEDS:-0 1 2}"  # e.g. SEEDS="0" bash run.sh
read -r -a PEER_LIST <<< "${PEERS:-scgen scarches_trvae cpa}"
read -r -a DATASET_LIST <<< "${DATASETS:-kang glioblastoma}"
PROJECT_PY="${PROJECT_PYTHON:-$ROOT/.venv/bin/python}"  # writes the input files

declare -A VENV=([scgen]=scgen [scarches_trvae]=scarches [cpa]=cpa)
for peer in "${PEER_LIST[@]}"; do
    [ -n "${VENV[$peer]:-}" ] || { echo "[run] unknown peer $peer" >&2; exit 2; }
done

bash "$HERE/setup.sh"
# The inputs, with each dataset's reporting groups (the peer scripts' default --groups).
(cd "$ROOT" && "$PROJECT_PY" -m benchmarks peer_data --datasets "${DATASET_LIST[@]}")
start=$(date +%s) failed=0
for dataset in "${DATASET_LIST[@]}"; do
    mkdir -p "$OUT/$dataset"
    for peer in "${PEER_LIST[@]}"; do
        log="$OUT/$dataset/$peer.log"
        if ! "$HERE/.venv-${VENV[$peer]}/bin/python" "$HERE/predict_$peer.py" \
            --dataset "$dataset" --seeds "${SEED_LIST[@]}" --out "$OUT" 2>&1 | tee "$log" \
            | grep --line-buffered "^\[$peer\]"; then
            echo "[run] $peer on $dataset failed; see $log"; failed=1
        fi
    done
done
echo "[run] done in $(( $(date +%s) - start )) s; predictions in $OUT"
[ "$failed" -eq 0 ]
