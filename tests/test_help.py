"""`--help` of the stages (issue 26): options listed by group, each with its default."""

from __future__ import annotations

import re

import pytest

from subnets.pipelines.common import parse_stage_args
from subnets.masking.search import search_arguments

GROUPS = ("model:", "data (built-in tasks):", "data (your own files):", "training:", "store:",
          "adversary and debiasing (objective):", "selective optimizer:", "method: mask search (every method):",
          "method: hard_concrete:", "method: one-shot (magnitude, wanda, sparsegpt):")


def test_stage2_help_lists_options_by_group_with_every_default(capsys):
    with pytest.raises(SystemExit) as stopped:
        parse_stage_args(search_arguments(), ["--help"])
    assert stopped.value.code == 0
    text = capsys.readouterr().out
    headings = [line for line in text.splitlines() if re.fullmatch(r"[a-z][^ ].*:", line)]
    assert all(group in headings for group in GROUPS)
    assert headings.index("model:") < headings.index("training:") < headings.index("method: hard_concrete:")
    entries = re.split(r"\n(?=  --)", text.split("model:", 1)[1])
    options = [e for e in entries if e.startswith("  --")]
    assert len(options) > 70
    missing = [e.split()[0] for e in options if "default" not in e.lower()]
    assert not missing, f"options without their default in --help: {missing}"
    for name, default in (("--learning_rate", "2e-05"), ("--per_device_train_batch_size", "32"),
                          ("--num_train_epochs", "3.0"), ("--seed", "42"), ("--target_sparsity", "0.5")):
        entry = next(e for e in options if e.startswith(f"  {name} "))
        assert f"(default: {default})" in " ".join(entry.split()), entry
