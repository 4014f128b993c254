#!/usr/bin/env bash
# The CUDA path checked in one command (about 5 minutes on one GPU, each part capped at 4):
# tests/test_cuda.py (every stage family under bf16 autocast with host syncs as errors; NCCL DDP with 2 GPUs),
# then the benchmark ratios with --device cuda. Prints one table: part, exit status, seconds, key lines.
#
#   bash benchmarks/gpu_check.sh DATA_DIR        (or with $SUBNETS_DATA_DIR set; PYTHON=... picks the interpreter)
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DATA=${1:-${SUBNETS_DATA_DIR:-}}
if [ -z "$DATA" ] || [ ! -d "$DATA/glue" ]; then
  echo "error: no data folder given; expected DATA_DIR (with glue/SST-2) as argument or in SUBNETS_DATA_DIR" >&2
  exit 2
fi
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "error: torch sees no CUDA device; expected a GPU machine" >&2
  exit 2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" SUBNETS_DATA_DIR="$DATA" HF_HUB_OFFLINE=1
LOG=$(mktemp -d)
ROWS=()

# part name, grep pattern of the lines to report, command...
part() {
  local name=$1 pattern=$2; shift 2
  local start=$SECONDS
  timeout 240 "$@" >"$LOG/$name.txt" 2>&1
  local rc=$? line
  ROWS+=("| $name | $rc | $((SECONDS - start)) | |")
  while IFS= read -r line; do
    ROWS+=("| | | | ${line//|/\/} |")
  done < <(grep -E "$pattern" "$LOG/$name.txt" | sed 's/^ *//')
}

part cuda_tests "passed|failed|error|skipped" "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py
part selective "ratio|RoAST /" "$PY" benchmarks/bench_selective.py --device cuda
part freelb "ratio" "$PY" benchmarks/bench_freelb.py --device cuda
part mask_steps "ratio" "$PY" benchmarks/bench_mask_steps.py --device cuda
part padding "ratio|data loading" "$PY" benchmarks/bench_padding.py --device cuda --data_dir "$DATA"
part compact_export "speed-up|logit difference" "$PY" benchmarks/bench_compact_export.py --device cuda --dtype bfloat16
part sparse_checkpoint "^ *[0-9]+%" "$PY" benchmarks/bench_sparse_checkpoint.py --device cuda
part mask_store "ratio" "$PY" benchmarks/bench_mask_store.py --device cuda --repeats 3
part attack "forward share|queries per second|Aua" "$PY" benchmarks/bench_attack.py --device cuda --data_dir "$DATA" \
  --examples 50 --repeats 1

echo
"$PY" -c "import torch; print(f'GPU: {torch.cuda.get_device_name()} x {torch.cuda.device_count()}, torch {torch.__version__}')"
echo "| part | exit | s | result |"
echo "|---|---:|---:|---|"
printf '%s\n' "${ROWS[@]}"
echo "full outputs: $LOG"
