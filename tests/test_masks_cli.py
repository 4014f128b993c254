"""The `subnets-masks` CLI through `main(argv)`: JSON outputs, tables, abbreviations, errors, plots, exports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from subnets.masks import MaskStore
from subnets.masks.cli import main
from subnets.weights import save_plain_model
from subnets.targets import find_targets


@pytest.fixture
def store_with_records(tmp_path, tiny_bert):
    model, tokenizer = tiny_bert
    store = MaskStore(tmp_path / "store")
    targets = find_targets(model, pooler=True)
    ids = {}
    for name, keep, seed, task in (("a", 0.5, 0, "sst2"), ("b", 0.5, 1, "sst2"), ("c", 0.1, 2, "rte")):
        g = torch.Generator().manual_seed(seed)
        ids[name] = store.put({t.name: torch.rand(t.shape, generator=g) < keep for t in targets},
                              meta={"task": task, "method": "imp", "model": "tiny", "seed": seed})
    with store.open_update_log({"method": "rose-first", "task": "sst2"}, flush_every=3) as log:
        for step in range(0, 30, 5):
            log.append(step, {t.name: torch.tensor(step % 10 == 0) for t in targets})
    ids["u"] = log.id
    save_plain_model(model, tokenizer, tmp_path / "base")
    return tmp_path, store, ids


def run(capsys, root, *argv):
    code = main(["--root", str(root / "store"), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_json_and_filters(capsys, store_with_records):
    root, _, ids = store_with_records
    code, out, _ = run(capsys, root, "list", "--json")
    assert code == 0 and {r["id"] for r in json.loads(out)} == set(ids.values())
    _, out, _ = run(capsys, root, "list", "--task", "sst2", "--kind", "ticket", "--json")
    assert {r["id"] for r in json.loads(out)} == {ids["a"], ids["b"]}
    _, out, _ = run(capsys, root, "list", "--min-sparsity", "0.8", "--json")
    assert [r["id"] for r in json.loads(out)] == [ids["c"]]
    code, out, _ = run(capsys, root, "list")
    assert code == 0 and ids["c"][:12] in out and "sparsity" in out


def test_show_table_and_json(capsys, store_with_records):
    root, store, ids = store_with_records
    code, out, _ = run(capsys, root, "show", ids["c"][:6])
    assert code == 0 and "layer 1" in out and "ffn_out" in out and "12 encoder matrices + pooler" in out
    _, out, _ = run(capsys, root, "--json", "show", ids["a"][:6])
    shown = json.loads(out)
    assert shown["id"] == ids["a"] and shown["grid_values"] == "sparsity"
    assert shown["grid"]["layers"]["0"]["query"] == pytest.approx(
        store.get(ids["a"]).meta["sparsity"]["per_tensor"]["bert.encoder.layer.0.attention.self.query.weight"])
    _, out, _ = run(capsys, root, "show", ids["u"][:8], "--json")
    update = json.loads(out)
    assert update["record"]["steps_logged"] == 6 and update["grid"]["layers"]["1"]["key"] == pytest.approx(0.5)


def test_diff_reports_iou_and_hamming(capsys, store_with_records):
    root, store, ids = store_with_records
    code, out, _ = run(capsys, root, "diff", ids["a"][:5], ids["b"][:5], "--json")
    result = json.loads(out)
    a, b = store.get(ids["a"]).masks, store.get(ids["b"]).masks
    inter = sum(int((a[n] & b[n]).sum()) for n in a)
    union = sum(int((a[n] | b[n]).sum()) for n in a)
    assert code == 0 and result["iou"] == pytest.approx(inter / union)
    assert result["hamming"] == sum(int((a[n] ^ b[n]).sum()) for n in a)
    assert set(result["per_layer"]) == {"0", "1", "pooler"}
    _, out, _ = run(capsys, root, "diff", ids["a"], ids["a"], "--json")
    assert json.loads(out)["iou"] == 1.0 and json.loads(out)["hamming"] == 0
    code, _, err = run(capsys, root, "diff", ids["a"], ids["u"])
    assert code == 2 and err.startswith("error: ")


def test_plot_writes_pngs(capsys, store_with_records):
    root, _, ids = store_with_records
    for key in ("a", "u"):
        code, _, _ = run(capsys, root, "plot", ids[key][:6], "--out", str(root / f"{key}.png"))
        assert code == 0 and (root / f"{key}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_state_is_plotted_on_its_own_range_with_a_histogram(capsys, store_with_records, monkeypatch):
    root, store, _ = store_with_records
    g = torch.Generator().manual_seed(3)
    state = {name: 3 + 2 * torch.randn(info["shape"], generator=g)  # score-like values, far outside [0, 1]
             for name, info in store.list(kind="ticket")[0].meta["tensors"].items()}
    # (a hard-concrete gate state is drawn as keep probabilities instead: tests/test_masks_plot_state.py)
    state_id = store.put(state, meta={"task": "sst2", "method": "scores", "model": "tiny", "seed": 0})
    drawn = {}

    def spy(grid, title, label, path, *, scale=(0.0, 1.0), values=None):
        drawn.update(scale=scale, values=values, label=label)
        original(grid, title, label, path, scale=scale, values=values)

    from subnets.masks import plot

    original = plot.plot_grid
    monkeypatch.setattr(plot, "plot_grid", spy)
    code, _, err = run(capsys, root, "plot", state_id[:8], "--out", str(root / "state.png"))
    assert code == 0, err
    assert (root / "state.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    means = [float(t.mean()) for t in state.values()]  # one tensor per cell of the tiny model's grid
    assert drawn["scale"] == pytest.approx((min(means), max(means)), abs=1e-5)
    everything = torch.cat([t.flatten() for t in state.values()])
    assert drawn["values"].numel() == everything.numel() and drawn["label"] == "mean scores state value"


def test_export_pt_dense_and_sparse(capsys, store_with_records):
    root, store, ids = store_with_records
    masks = store.get(ids["a"]).masks
    assert run(capsys, root, "export", ids["a"][:6], "--format", "pt", "--out", str(root / "m.pt"))[0] == 0
    assert all(torch.equal(v, masks[k]) for k, v in torch.load(root / "m.pt").items())
    code, _, err = run(capsys, root, "export", ids["a"][:6], "--format", "dense", "--out", str(root / "d"))
    assert code == 2 and "--model" in err
    code, _, _ = run(capsys, root, "export", ids["a"][:6], "--format", "dense", "--model", str(root / "base"),
                     "--out", str(root / "dense"))
    from transformers import AutoModelForSequenceClassification

    dense = AutoModelForSequenceClassification.from_pretrained(root / "dense")
    assert code == 0 and all(not dense.get_parameter(n)[~m].any() for n, m in masks.items())
    code, _, _ = run(capsys, root, "export", ids["a"][:6], "--format", "sparse", "--model", str(root / "base"),
                     "--out", str(root / "sparse"))
    from subnets.masks.checkpoint import load_sparse_state_dict

    state = load_sparse_state_dict(root / "sparse", store=store)
    assert code == 0 and all(torch.equal(state[k], v) for k, v in dense.state_dict().items())


def test_verify_rm_and_errors(capsys, store_with_records):
    root, _, ids = store_with_records
    assert run(capsys, root, "verify")[0] == 0
    path = root / "store" / "records" / ids["b"] / "masks.safetensors"
    path.write_bytes(path.read_bytes()[:-5])
    code, out, _ = run(capsys, root, "verify", "--json")
    assert code == 1 and {r["id"] for r in json.loads(out) if not r["ok"]} == {ids["b"]}
    code, out, _ = run(capsys, root, "rm", ids["b"][:6], "--json")
    assert code == 0 and json.loads(out) == {"removed": [ids["b"]]}
    code, _, err = run(capsys, root, "show", "ffff0000")
    assert code == 2 and err.count("\n") == 1 and "ffff0000" in err
    assert main(["--root", str(root / "missing"), "list"]) == 2


def test_python_dash_m_entry_point(store_with_records):
    root, _, ids = store_with_records
    done = subprocess.run([sys.executable, "-m", "subnets.masks", "--root", str(root / "store"), "list", "--json"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and len(json.loads(done.stdout)) == len(ids)


def test_plot_never_replaces_an_existing_file_and_creates_a_missing_folder(capsys, store_with_records):
    """Issue 28, defect 1: `plot --out thesis.pdf` overwrote any existing file, exit 0."""
    root, _, ids = store_with_records
    thesis = root / "thesis.pdf"
    thesis.write_bytes(b"my thesis")
    code, _, err = run(capsys, root, "plot", ids["a"][:6], "--out", str(thesis))
    assert code == 2 and "already exists" in err and "--force" in err and thesis.read_bytes() == b"my thesis"
    code, _, err = run(capsys, root, "plot", ids["a"][:6], "--out", str(root / "figs" / "new" / "a.pdf"))
    assert code == 0 and (root / "figs" / "new" / "a.pdf").read_bytes()[:5] == b"%PDF-"
    code, _, err = run(capsys, root, "plot", ids["a"][:6], "--out", str(root / "a.nosuchformat"))
    assert code == 2 and err.count("\n") == 1 and "nosuchformat" in err
    code, _, _ = run(capsys, root, "plot", ids["a"][:6], "--out", str(thesis), "--force")
    assert code == 0 and thesis.read_bytes()[:5] == b"%PDF-"


def test_missing_paths_are_named_and_export_writes_into_a_linked_folder(capsys, store_with_records):
    """Issue 28, defect 19: a missing path was "not a record id"; `export --out LINK` replaced the link."""
    root, _, ids = store_with_records
    missing = root / "runs" / "gone" / "mask.safetensors"
    code, _, err = run(capsys, root, "show", str(missing))
    assert code == 2 and f"{missing} does not exist" in err
    target = root / "target"
    target.mkdir()
    (root / "link").symlink_to(target)
    code, _, _ = run(capsys, root, "export", ids["a"][:6], "--format", "dense", "--model", str(root / "base"),
                     "--out", str(root / "link"))
    assert code == 0 and (root / "link").is_symlink() and (target / "config.json").is_file()
