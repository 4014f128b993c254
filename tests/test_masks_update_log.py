"""Per-step update-mask logs: appends, counts, chunked files, crash safety, validation."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from subnets.masks import MaskStore
from subnets.errors import SubnetsError

NAMES = ["roberta.encoder.layer.0.attention.self.query.weight", "roberta.encoder.layer.1.output.dense.weight"]


def scalar_masks(step: int) -> dict[str, torch.Tensor]:
    return {NAMES[0]: torch.tensor(step % 2 == 0), NAMES[1]: torch.tensor(1.0 if step % 3 == 0 else 0.0)}


def test_appends_counts_and_steps(tmp_path):
    store = MaskStore(tmp_path)
    log = store.open_update_log({"method": "rose-second", "task": "sst2", "seed": 1}, flush_every=4)
    steps = list(range(0, 50, 5))
    for step in steps:
        log.append(step, scalar_masks(step))
    record_id = log.close()
    record = store.get(record_id[:7])
    assert record.kind == "update" and record.meta["complete"] and record.meta["steps_logged"] == 10
    assert record.meta["update_counts"][NAMES[0]] == sum(s % 2 == 0 for s in steps)
    assert record.meta["update_counts"][NAMES[1]] == sum(s % 3 == 0 for s in steps)
    logged = list(record.steps())
    assert [s for s, _ in logged] == steps
    assert all(torch.equal(m[NAMES[1]], scalar_masks(s)[NAMES[1]]) for s, m in logged)
    assert record.masks[NAMES[0]] == pytest.approx(0.5)
    chunks = sorted(p.name for p in (tmp_path / "records" / record_id).glob("chunk-*"))
    assert len(chunks) == 3  # 4 + 4 + 2 appends
    assert store.verify(record_id)[0]["ok"]


def test_elementwise_float_masks_count_fractions(tmp_path):
    store = MaskStore(tmp_path)
    with store.open_update_log({"method": "roast"}, flush_every=2) as log:
        for step in range(3):
            mask = torch.zeros(4, 5)
            mask[: step + 1] = 2.5  # rescaled Bernoulli mask: non-zero means updated
            log.append(step, {NAMES[0]: mask})
    record = store.get(log.id)
    assert record.meta["update_counts"][NAMES[0]] == pytest.approx(0.25 + 0.5 + 0.75)
    assert record.masks[NAMES[0]][0].tolist() == [1.0] * 5 and record.masks[NAMES[0]][3].tolist() == [0.0] * 5
    assert [m[NAMES[0]].dtype for _, m in record.steps()] == [torch.float32] * 3


def test_appends_never_rewrite_earlier_chunks(tmp_path):
    store = MaskStore(tmp_path)
    log = store.open_update_log({"method": "rose-first"}, flush_every=1)
    log.append(1, scalar_masks(1))
    first = log.directory / "chunk-000000.safetensors"
    before = (first.stat().st_ino, first.stat().st_mtime_ns, first.read_bytes())
    for step in range(2, 20):
        log.append(step, scalar_masks(step))
    assert (first.stat().st_ino, first.stat().st_mtime_ns, first.read_bytes()) == before
    assert len((log.directory / "index.jsonl").read_text().splitlines()) == 19


CRASHING_RUN = """
import os, sys, torch
from subnets.masks import MaskStore
log = MaskStore(sys.argv[1]).open_update_log({"method": "rose-first", "task": "rte"}, flush_every=4)
for step in range(10):
    log.append(step, {"bert.encoder.layer.0.output.dense.weight": torch.rand(3, 3) > 0.5})
print(log.id, flush=True)
os._exit(1)  # dies without close(): steps 8 and 9 are still buffered
"""


def test_a_crash_mid_run_leaves_a_readable_record(tmp_path):
    run = subprocess.run([sys.executable, "-c", CRASHING_RUN, str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 1, run.stderr
    record_id = run.stdout.strip()
    store = MaskStore(tmp_path)
    record = store.get(record_id)
    assert record.meta["complete"] is False and record.meta["steps_logged"] == 8
    assert [s for s, _ in record.steps()] == list(range(8))
    assert record.meta["tensors"]["bert.encoder.layer.0.output.dense.weight"]["shape"] == [3, 3]
    # a torn last index line (crash while appending it) is ignored
    with open(tmp_path / "records" / record_id / "index.jsonl", "a") as index:
        index.write('{"file": "chunk-000002.safe')
    assert store.get(record_id).meta["steps_logged"] == 8
    assert store.verify(record_id)[0]["ok"]


def test_inconsistent_appends_are_rejected(tmp_path):
    log = MaskStore(tmp_path).open_update_log({"method": "rose-first"})
    log.append(3, {NAMES[0]: torch.tensor(True)})
    with pytest.raises(SubnetsError, match="above the previous one"):
        log.append(3, {NAMES[0]: torch.tensor(True)})
    with pytest.raises(SubnetsError, match=f"at '{NAMES[0]}'"):
        log.append(4, {NAMES[0]: torch.ones(2, dtype=torch.bool)})
    with pytest.raises(SubnetsError, match="computed by the store"):
        MaskStore(tmp_path).open_update_log({"update_counts": {}})
    record_id = log.close()
    with pytest.raises(SubnetsError, match="closed"):
        log.append(5, {NAMES[0]: torch.tensor(True)})
    assert json.loads((tmp_path / "records" / record_id / "record.json").read_text())["record"]["steps_logged"] == 1


def test_an_identical_rerun_closes_onto_the_existing_record(tmp_path):
    store = MaskStore(tmp_path)
    ids = []
    for _ in range(2):
        log = store.open_update_log({"method": "rose-second", "task": "sst2", "seed": 3}, flush_every=2)
        for step in range(0, 6):
            log.append(step, scalar_masks(step))
        ids.append(log.close())
    assert ids[0] == ids[1]
    assert [r.id for r in store.list()] == [ids[0]]
    assert store.verify(ids[0])[0]["ok"]


def test_removing_an_open_log_fails_its_writer_and_verify_checks_chunks_against_metadata(tmp_path):
    """Issue 28, defect 9: `subnets-masks rm` of an open log during a run left a record whose metadata claimed
    every step while chunks were missing, and `verify` said ok."""
    import os

    from subnets.masks.files import read_record_json, write_record_json
    from subnets.masks.record import content_id, sha256_hex

    store = MaskStore(tmp_path)
    log = store.open_update_log({"method": "rose-first"}, flush_every=1)
    log.append(1, scalar_masks(1))
    store.remove(log.id)  # what `subnets-masks rm` does while the run goes on
    with pytest.raises(SubnetsError, match="was removed from"):
        log.append(2, scalar_masks(2))
    with pytest.raises(SubnetsError):
        log.close()
    assert store.ids() == []  # complete or absent: nothing claims the lost steps

    log = store.open_update_log({"method": "rose-first"}, flush_every=1)
    for step in (1, 2, 3):
        log.append(step, scalar_masks(step))
    directory = tmp_path / "records" / log.close()
    # the record the old writer published: chunk 0 gone, checksums and id consistent with what is left
    meta = read_record_json(directory)
    (directory / "chunk-000000.safetensors").unlink()
    index = b"".join((directory / "index.jsonl").read_bytes().splitlines(keepends=True)[1:])
    (directory / "index.jsonl").write_bytes(index)
    del meta["files"]["chunk-000000.safetensors"]
    meta["files"]["index.jsonl"] = {"sha256": sha256_hex(index), "bytes": len(index)}
    damaged = tmp_path / "records" / content_id(meta, {n: f["sha256"] for n, f in meta["files"].items()})
    os.rename(directory, damaged)
    write_record_json(damaged, meta)
    [result] = store.verify()
    assert not result["ok"] and "chunk-000000.safetensors is missing" in result["problem"]
