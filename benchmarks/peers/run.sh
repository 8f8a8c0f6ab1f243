#!/usr/bin/env bash
# Peer predictions for the held-out benchmarks: scGen (pertpy) and scArches' TRVAE on the bundled
# Kang file (7 cell types) and the glioblastoma data (patients PW034 PW036 PW040), seeds 0 1 2.
# Usage: bash benchmarks/peers/run.sh [OUT_DIR]   (default OUT_DIR: benchmarks/peers/predictions)
# Environment: SEEDS (default "0 1 2"), PEERS (default "scgen scarches_trvae"), DATASETS (default
# "kang glioblastoma"). Writes OUT_DIR/<dataset>/<peer>/<group>_seed<S>.npz; runs whose .npz
# exists are skipped, so an interrupted run resumes; delete OUT_DIR/<dataset>/<peer> to redo one.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT="${1:-$HERE/predictions}"
read -r -a SEED_LIST <<< "${SEEDS:-0 1 2}"  # e.g. SEEDS="0" bash run.sh
read -r -a PEER_LIST <<< "${PEERS:-scgen scarches_trvae}"
read -r -a DATASET_LIST <<< "${DATASETS:-kang glioblastoma}"
PROJECT_PY="${PROJECT_PYTHON:-$ROOT/.venv/bin/python}"  # writes the glioblastoma input file

# The reporting groups (as in _common.DATASETS and benchmarks/perturbation_data.py).
declare -A GROUP_LISTS=(
    [kang]="B CD14+Mono CD4T CD8T Dendritic FCGR3A+Mono NK"
    [glioblastoma]="PW034 PW036 PW040"
)
declare -A VENV=([scgen]=scgen [scarches_trvae]=scarches)
for dataset in "${DATASET_LIST[@]}"; do
    [ -n "${GROUP_LISTS[$dataset]:-}" ] || { echo "[run] unknown dataset $dataset" >&2; exit 2; }
done
for peer in "${PEER_LIST[@]}"; do
    [ -n "${VENV[$peer]:-}" ] || { echo "[run] unknown peer $peer" >&2; exit 2; }
done

bash "$HERE/setup.sh"
if [[ " ${DATASET_LIST[*]} " == *" glioblastoma "* ]]; then
    "$PROJECT_PY" "$HERE/write_data.py" --datasets glioblastoma
fi
start=$(date +%s)
for dataset in "${DATASET_LIST[@]}"; do
    read -r -a groups <<< "${GROUP_LISTS[$dataset]}"
    mkdir -p "$OUT/$dataset"
    for peer in "${PEER_LIST[@]}"; do
        log="$OUT/$dataset/$peer.log"
        "$HERE/.venv-${VENV[$peer]}/bin/python" "$HERE/predict_$peer.py" --dataset "$dataset" \
            --groups "${groups[@]}" --seeds "${SEED_LIST[@]}" --out "$OUT" 2>&1 \
            | tee "$log" | grep --line-buffered "^\[$peer\]" \
            || echo "[run] $peer on $dataset failed; see $log"
    done
done
n=0 expected=0
for dataset in "${DATASET_LIST[@]}"; do
    read -r -a groups <<< "${GROUP_LISTS[$dataset]}"
    for peer in "${PEER_LIST[@]}"; do
        for group in "${groups[@]}"; do
            for seed in "${SEED_LIST[@]}"; do
                expected=$(( expected + 1 ))
                if [ -f "$OUT/$dataset/$peer/${group}_seed${seed}.npz" ]; then n=$(( n + 1 )); fi
            done
        done
    done
done
echo "[run] $n of $expected prediction files in $OUT ($(( $(date +%s) - start )) s)"
[ "$n" -eq "$expected" ]
