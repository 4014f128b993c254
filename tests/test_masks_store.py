"""MaskStore: round trips, ids and abbreviations, metadata, filters, concurrency, corruption, shape checks."""

from __future__ import annotations

import json
import multiprocessing as mp

import pytest
import torch

from subnets.masks import MaskStore, apply_masks, check_shapes, describe_model
from subnets.masks.bits import decode_masks, encode_masks
from subnets.errors import SubnetsError
from subnets.targets import find_targets


def random_ticket(model: torch.nn.Module, keep: float = 0.5, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {t.name: torch.rand(t.shape, generator=g) < keep for t in find_targets(model, pooler=True)}


def test_bits_round_trip_is_exact_for_odd_sizes_scalars_and_float_dtypes():
    masks = {
        "a": torch.rand(7, 13) > 0.5,
        "b": torch.tensor(True),
        "c": torch.zeros(0, dtype=torch.bool),
        "d": torch.randn(5, 3, dtype=torch.bfloat16),
        "e": torch.randn(4, dtype=torch.float16),
        "f": torch.tensor(0.25),
    }
    data = encode_masks(masks)
    assert len(data) < 2000
    back = decode_masks(data)
    assert list(back) == list(masks)
    for name, value in masks.items():
        assert back[name].dtype == value.dtype and back[name].shape == value.shape
        assert torch.equal(back[name], value)


def test_put_get_round_trip_and_metadata(tmp_path, tiny):
    model, _ = tiny
    store = MaskStore(tmp_path)
    ticket = random_ticket(model, keep=0.3)
    meta = {"method": "imp", "task": "sst2", "target_sparsity": 0.7, "seed": 3, "step": 100, "parent": "runs/ft",
            "config": {"lr": 1e-5}, **describe_model(model, "tiny")}
    record_id = store.put(ticket, meta=meta)
    record = store.get(record_id)
    assert record.kind == "ticket"
    assert all(torch.equal(record.masks[n], ticket[n]) for n in ticket)
    pruned = sum(int((~m).sum()) for m in ticket.values())
    total = sum(m.numel() for m in ticket.values())
    sparsity = record.meta["sparsity"]
    assert sparsity["global"] == pytest.approx(pruned / total)
    assert sparsity["denominator"].startswith("12 encoder matrices")
    name = next(iter(ticket))
    assert sparsity["per_tensor"][name] == pytest.approx(float((~ticket[name]).float().mean()))
    assert record.meta["tensors"][name]["shape"] == list(ticket[name].shape)
    assert record.meta["model_fingerprint"] == describe_model(model)["model_fingerprint"]
    assert record.meta["config"] == {"lr": 1e-5} and record.meta["seed"] == 3 and record.meta["created"]
    # the packed file holds 1 bit per weight plus a small header
    assert (tmp_path / "records" / record_id / "masks.safetensors").stat().st_size < total / 8 + 4096


def test_real_valued_state_keeps_dtype(tmp_path):
    store = MaskStore(tmp_path)
    state = {"bert.encoder.layer.0.attention.self.query.weight": torch.randn(8, 8, dtype=torch.bfloat16)}
    record = store.get(store.put(state, meta={"method": "hard_concrete"}))
    assert record.kind == "state" and record.meta["sparsity"] is None
    assert torch.equal(record.masks["bert.encoder.layer.0.attention.self.query.weight"], next(iter(state.values())))


def test_ids_are_content_hashes_and_abbreviations_resolve(tmp_path):
    store = MaskStore(tmp_path)
    mask = {"w": torch.rand(9, 9) > 0.5}
    first = store.put(mask, meta={"task": "sst2"})
    assert store.put(mask, meta={"task": "sst2"}) == first
    assert store.put(mask, meta={"task": "rte"}) != first
    assert len(first) == 64 and store.resolve(first[:6]) == first
    (tmp_path / "records" / "abcd1111").mkdir()
    (tmp_path / "records" / "abcd2222").mkdir()
    with pytest.raises(SubnetsError, match="ambiguous"):
        store.resolve("abcd")
    with pytest.raises(SubnetsError, match="at least 4 hex"):
        store.resolve("ab")


def test_bad_meta_and_bad_masks_are_rejected(tmp_path):
    store = MaskStore(tmp_path)
    mask = {"w": torch.ones(2, 2, dtype=torch.bool)}
    with pytest.raises(SubnetsError, match="kind 'nonsense'"):
        store.put(mask, meta={"kind": "nonsense"})
    with pytest.raises(SubnetsError, match="computed by the store"):
        store.put(mask, meta={"sparsity": 0.5})
    with pytest.raises(SubnetsError, match="target_sparsity"):
        store.put(mask, meta={"target_sparsity": 70})
    with pytest.raises(SubnetsError, match="dtype torch.int64"):
        store.put({"w": torch.ones(2, dtype=torch.long)})
    with pytest.raises(SubnetsError, match="must be binary"):
        store.put({"w": torch.ones(2)}, meta={"kind": "ticket"})


def test_list_filters(tmp_path, tiny_bert):
    model, _ = tiny_bert
    store = MaskStore(tmp_path)
    low = store.put(random_ticket(model, keep=0.8), meta={"task": "sst2", "method": "imp", "model": "tiny"})
    high = store.put(random_ticket(model, keep=0.2), meta={"task": "sst2", "method": "robust_ticket", "model": "tiny"})
    other = store.put(random_ticket(model, keep=0.5), meta={"task": "mnli", "method": "imp", "model": "tiny"})
    ids = lambda **f: {r.id for r in store.list(**f)}
    assert ids() == {low, high, other}
    assert ids(task="sst2") == {low, high}
    assert ids(method="imp", task="sst2") == {low}
    assert ids(min_sparsity=0.6) == {high}
    assert ids(min_sparsity=0.1, max_sparsity=0.6) == {low, other}
    assert ids(model="other-model") == set()


def _writer(root: str, worker: int, out: "mp.Queue") -> None:
    store = MaskStore(root)
    ids = []
    for i in range(12):
        g = torch.Generator().manual_seed(i if i % 2 else 1000 * worker + i)  # odd i: both workers write the same
        ids.append(store.put({"layer.0.w": torch.rand(64, 64, generator=g) > 0.5}, meta={"i": i}))
    out.put(ids)


def test_two_processes_writing_at_once_never_corrupt_the_store(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_writer, args=(str(tmp_path), w, queue)) for w in (1, 2)]
    for p in workers:
        p.start()
    written = [queue.get(timeout=120) for _ in workers]
    for p in workers:
        p.join(timeout=120)
        assert p.exitcode == 0
    store = MaskStore(tmp_path)
    expected = set(written[0]) | set(written[1])
    assert set(store.ids()) == expected and len(expected) == 18  # 6 shared + 2 x 6 own
    assert all(r["ok"] for r in store.verify())
    assert all(store.get(i).masks["layer.0.w"].shape == (64, 64) for i in expected)
    assert not list((tmp_path / "tmp").iterdir())  # no staging leftovers


def test_corrupt_and_truncated_files_are_detected_and_the_rest_stays_readable(tmp_path):
    store = MaskStore(tmp_path)
    ids = [store.put({"w": torch.rand(100, 100) > 0.5}, meta={"i": i}) for i in range(3)]
    flipped = tmp_path / "records" / ids[0] / "masks.safetensors"
    data = bytearray(flipped.read_bytes())
    data[-10] ^= 0xFF
    flipped.write_bytes(bytes(data))
    truncated = tmp_path / "records" / ids[1] / "masks.safetensors"
    truncated.write_bytes(truncated.read_bytes()[:-100])
    with pytest.raises(SubnetsError, match="checksum"):
        store.get(ids[0]).masks
    with pytest.raises(SubnetsError, match="truncated"):
        store.get(ids[1]).masks
    assert store.get(ids[2]).masks["w"].shape == (100, 100)
    results = {r["id"]: r for r in store.verify()}
    assert [results[i]["ok"] for i in ids] == [False, False, True]
    # a damaged record.json: skipped by list, reported by verify and by get
    (tmp_path / "records" / ids[2] / "record.json").write_text("{not json")
    assert {r.id for r in store.list()} == {ids[0], ids[1]}
    assert store.unreadable() == [ids[2]]
    with pytest.raises(SubnetsError, match="damaged"):
        store.get(ids[2])


def test_edited_metadata_fails_its_checksum(tmp_path):
    store = MaskStore(tmp_path)
    record_id = store.put({"w": torch.rand(4, 4) > 0.5}, meta={"task": "sst2"})
    path = tmp_path / "records" / record_id / "record.json"
    body = json.loads(path.read_text())
    body["record"]["task"] = "rte"
    path.write_text(json.dumps(body))
    assert not store.verify(record_id)[0]["ok"]
    with pytest.raises(SubnetsError, match="checksum"):
        store.get(record_id)


def test_apply_zeroes_pruned_weights_and_shape_mismatch_names_the_tensor(tmp_path, tiny):
    model, _ = tiny
    ticket = random_ticket(model, keep=0.4)
    apply_masks(model, ticket)
    params = dict(model.named_parameters())
    for name, mask in ticket.items():
        assert not params[name][~mask].any()
    bad = dict(ticket)
    name = list(bad)[3]
    bad[name] = torch.ones(5, 7, dtype=torch.bool)
    with pytest.raises(SubnetsError, match=f"'{name}' has shape \\(5, 7\\)"):
        check_shapes(model, bad)
    with pytest.raises(SubnetsError, match="no parameter 'nope.weight'"):
        apply_masks(model, {"nope.weight": torch.ones(1, dtype=torch.bool)})


def test_fingerprint_is_deterministic_and_sees_weight_changes(tiny_bert):
    model, _ = tiny_bert
    before = describe_model(model)["model_fingerprint"]
    assert describe_model(model)["model_fingerprint"] == before
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert describe_model(model)["model_fingerprint"] != before


def test_remove(tmp_path):
    store = MaskStore(tmp_path)
    keep = store.put({"w": torch.ones(3, dtype=torch.bool)})
    gone = store.put({"w": torch.zeros(3, dtype=torch.bool)})
    assert store.remove(gone[:8]) == gone
    assert store.ids() == [keep]
    with pytest.raises(SubnetsError, match="No record"):
        store.get(gone)


def test_every_record_kind_has_a_format_and_an_unknown_kind_is_one_clear_error(tmp_path):
    from subnets.masks import KINDS
    from subnets.masks.files import read_record_json, write_record_json
    from subnets.masks.store import FORMATS

    assert set(FORMATS) == set(KINDS)
    store = MaskStore(tmp_path)
    record_id = store.put({"w": torch.tensor([True, False])}, {"task": "sst2"})
    directory = store.records_dir / record_id
    write_record_json(directory, {**read_record_json(directory), "kind": "future"})
    with pytest.raises(SubnetsError, match="has kind 'future'; expected one of ticket, state, update"):
        store.get(record_id)
    assert store.scan()[1] and not store.verify(record_id)[0]["ok"]
