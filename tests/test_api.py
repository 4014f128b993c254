"""The example in docs/api.md runs as written (with a tiny model in place of minilm) and does what it says."""

import json
import re

import pytest
import torch
from conftest import REPO
from subnets.masks import MaskStore
from subnets.errors import SubnetsError
from subnets.toydata import write_toy_neighbours


def test_api_example_runs(tmp_path, tiny_model_dir, tiny_data_dir, monkeypatch, capsys):
    text = (REPO / "docs" / "api.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert 'MODEL = "minilm"' in code
    code = code.replace('MODEL = "minilm"', f"MODEL = {str(tiny_model_dir())!r}")
    monkeypatch.chdir(tmp_path)
    write_toy_neighbours(tiny_data_dir)  # TextBugger's embedding swaps read the neighbour lists of the data folder
    monkeypatch.setenv("SUBNETS_DATA_DIR", str(tiny_data_dir))
    exec(compile(code, "docs/api.md", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    assert "labels ('neg', 'pos'); ticket sparsity 0.300" in out
    ticket_id = re.search(r"stored ticket (\w+)", out).group(1)
    store = MaskStore(tmp_path / "store")
    tickets = store.list(kind="ticket", task="custom")
    assert ticket_id in {r.id[:12] for r in tickets} and len(tickets) == 2  # the search's and the drawn one
    assert store.list(kind="state")
    for run in ("search", "ticket"):
        assert json.loads((tmp_path / "runs" / run / "trainer_state.json").read_text())["global_step"] == 8
    assert len((tmp_path / "runs" / "attack.jsonl").read_text().splitlines()) == 4


def test_import_subnets_is_light():
    import subprocess
    import sys

    code = "import sys, subnets; print('torch' in sys.modules, callable(subnets.draw_ticket))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.split() == ["False", "True"]


def test_api_calls_with_wrong_arguments_are_one_clear_error(tiny_bert):
    import pytest

    from subnets import api
    from subnets.errors import SubnetsError

    model, tokenizer = tiny_bert
    task = api.load_task("sst2")
    calls = {"load_model: argument task is str": lambda: api.load_model("minilm", "sst2"),
             "load_data: argument task is str": lambda: api.load_data("sst2", tokenizer),
             "load_data: argument tokenizer is NoneType": lambda: api.load_data(task, None),
             "finetune: argument data is NoneType": lambda: api.finetune(model, tokenizer, task, None, "out"),
             "attack: argument data is NoneType": lambda: api.attack(model, tokenizer, task, None),
             "put_mask: argument mask is list": lambda: api.put_mask([1], model, task=task),
             "put_mask: argument mask holds values that are not tensors": lambda: api.put_mask({"a": 3}, model,
                                                                                                 task=task),
             "load_task: name is int": lambda: api.load_task(5),
             "load_model: seed -1 is out of range": lambda: api.load_model("minilm", task, seed=-1)}
    for message, call in calls.items():
        with pytest.raises(SubnetsError, match=message):
            call()


def test_load_data_reads_the_data_folder_of_subnets_data_dir(tiny_bert, tiny_data_dir, monkeypatch):
    from subnets import api

    monkeypatch.setenv("SUBNETS_DATA_DIR", str(tiny_data_dir))
    data = api.load_data(api.load_task("sst2"), tiny_bert[1], max_seq_length=16)
    assert len(data.train) == 96 and len(data.eval) == 32  # the toy folder's sizes, not the hub's
    held = api.load_data(api.load_task("sst2"), tiny_bert[1], validation_split_percentage=25)  # as the stages hold out
    rows = api.load_data(api.load_task("sst2"), tiny_bert[1]).train
    assert len(held.train) + len(held.eval) == len(rows) and 20 <= len(held.eval) <= 28
    assert set(held.eval_text["idx"]) <= set(rows["idx"]) and not set(held.eval_text["idx"]) & set(held.train["idx"])


def test_finetune_into_an_existing_run_folder_resumes_only_the_same_call(tmp_path, tiny_model_dir, tiny_data_dir):
    """Issue 28, defect 4: `finetune` into another run's folder loaded that run's checkpoint into the model passed in
    and returned its metrics without training."""
    import pytest
    import torch

    import subnets
    from subnets.pipelines import stage1_finetune
    from subnets.errors import SubnetsError

    task = subnets.load_task("sst2")
    model_dir, out = tiny_model_dir(), tmp_path / "run"
    model, tokenizer = subnets.load_model(model_dir, task)
    data = subnets.load_data(task, tokenizer, data_dir=tiny_data_dir)
    quick = dict(max_steps=2, per_device_train_batch_size=16, disable_tqdm=True, report_to="none")
    first = subnets.finetune(model, tokenizer, task, data, out, learning_rate=1e-3, **quick)
    other, _ = subnets.load_model(model_dir, task)
    with torch.no_grad():
        other.classifier.weight.add_(0.5)  # another starting model
    with pytest.raises(SubnetsError, match="already holds a run of other model_fingerprint"):
        subnets.finetune(other, tokenizer, task, data, out, learning_rate=1e-3, **quick)
    before = {n: p.clone() for n, p in other.state_dict().items()}
    with pytest.raises(SubnetsError, match="already holds a run of other model_fingerprint, options"):
        subnets.finetune(other, tokenizer, task, data, out, learning_rate=3e-3, **quick)
    assert all(torch.equal(before[n], p) for n, p in other.state_dict().items())  # nothing was loaded into it
    again, _ = subnets.load_model(model_dir, task)  # the same call: the finished run is resumed, not retrained
    assert subnets.finetune(again, tokenizer, task, data, out, learning_rate=1e-3, **quick) == first
    replaced = subnets.finetune(other, tokenizer, task, data, out, learning_rate=3e-3, overwrite_output_dir=True,
                                **quick)
    assert replaced["train_steps"] == 2 and replaced["train_loss"] != first["train_loss"]
    with pytest.raises(SubnetsError, match="holds a different run"):  # the CLI resumes only its own runs too
        stage1_finetune.main(["--model_name_or_path", str(model_dir), "--task_name", "sst2", "--data_dir",
                              str(tiny_data_dir), "--output_dir", str(out), "--max_steps", "2"])


@pytest.mark.parametrize("methods", [dict(adversary="freelb", adv_steps=2, adv_lr=0.05),
                                     dict(selective="rose_second", rose_upper=80.0)],
                         ids=["adversary", "selective"])
def test_finetune_with_method_options_trains_the_weights_subnets_finetune_trains(tmp_path, tiny_model_dir,
                                                                                 tiny_data_dir, methods):
    """Issue 23, item 2: `subnets.finetune` takes the stage's method options and builds the run the stage builds
    (`subnets.parts`), so the same options give the same weights, bit for bit."""
    from safetensors.torch import load_file

    import subnets
    from subnets.pipelines import stage1_finetune

    model_dir = tiny_model_dir()
    quick = dict(max_steps=3, per_device_train_batch_size=16, learning_rate=1e-3, eval_strategy="steps", eval_steps=1,
                 report_to="none", disable_tqdm=True)
    stage_options = {**quick, **methods, "mask_store": str(tmp_path / "stage_store")}
    argv = ["--model_name_or_path", str(model_dir), "--task_name", "sst2", "--data_dir", str(tiny_data_dir),
            "--max_train_samples", "48", "--output_dir", str(tmp_path / "stage"),
            *[token for k, v in stage_options.items() for token in (f"--{k}", str(v))]]
    stage = stage1_finetune.main(argv)
    task = subnets.load_task("sst2")
    model, tokenizer = subnets.load_model(model_dir, task)
    data = subnets.load_data(task, tokenizer, data_dir=tiny_data_dir, max_train_samples=48)
    api = subnets.finetune(model, tokenizer, task, data, tmp_path / "api", **quick, **methods,
                           mask_store=str(tmp_path / "api_store"))
    assert {k: v for k, v in api.items() if "runtime" not in k and "per_second" not in k} == \
        {k: v for k, v in stage.items() if "runtime" not in k and "per_second" not in k}
    # the best and final weights, and the optimizer's state (checkpoint-last/trainer_state.safetensors)
    files = sorted(p.relative_to(tmp_path / "stage") for p in (tmp_path / "stage").glob("checkpoint-*/*.safetensors"))
    assert len(files) == 3
    for name in files:
        ours, theirs = load_file(tmp_path / "api" / name), load_file(tmp_path / "stage" / name)
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    with pytest.raises(SubnetsError, match="Unknown option.s. adversry; expected fields of TrainingArguments"):
        subnets.finetune(model, tokenizer, task, data, tmp_path / "typo", adversry="freelb")
