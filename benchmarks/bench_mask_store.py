"""Mask store put / get / diff of a BERT-base-size binary mask (85M weights, ~50% kept) (CPU tensors, or
the device given by --device: then put/diff include the copy to the host).

Run: python benchmarks/bench_mask_store.py [--repeats 5] [--device cuda]
Prints medians over interleaved repetitions, throughput in MB/s of mask entries (1 byte per bool weight) and the
ratio to a plain torch.save / torch.load of the same (unpacked) bool dict in the same process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_device_option, device_from  # noqa: E402

from subnets.masks import MaskStore  # noqa: E402
from subnets.masks.report import diff_masks  # noqa: E402

HIDDEN, FFN, LAYERS = 768, 3072, 12


def bert_base_mask(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = {"attention.self.query": (HIDDEN, HIDDEN), "attention.self.key": (HIDDEN, HIDDEN),
              "attention.self.value": (HIDDEN, HIDDEN), "attention.output.dense": (HIDDEN, HIDDEN),
              "intermediate.dense": (FFN, HIDDEN), "output.dense": (HIDDEN, FFN)}
    return {f"bert.encoder.layer.{i}.{m}.weight": torch.rand(s, generator=g) < 0.5
            for i in range(LAYERS) for m, s in shapes.items()}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    add_device_option(parser)
    args = parser.parse_args()
    device = device_from(args)
    a, b = ({k: v.to(device) for k, v in bert_base_mask(seed).items()} for seed in (0, 1))
    weights = sum(m.numel() for m in a.values())
    megabytes = weights / 1e6
    times: dict[str, list[float]] = {k: [] for k in ("put", "get", "diff", "torch.save", "torch.load")}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for repeat in range(args.repeats):
            store = MaskStore(root / f"store{repeat}")
            ids: list[str] = []
            times["put"].append(timed(lambda: ids.append(store.put(a, meta={"repeat": repeat}))))
            times["torch.save"].append(timed(lambda: torch.save(a, root / f"plain{repeat}.pt")))
            times["get"].append(timed(lambda: store.get(ids[0]).masks))
            times["torch.load"].append(timed(lambda: torch.load(root / f"plain{repeat}.pt")))
            times["diff"].append(timed(lambda: diff_masks(a, b)))
        stored = (store.records_dir / ids[0] / "masks.safetensors").stat().st_size
        plain = (root / "plain0.pt").stat().st_size
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"mask: {weights / 1e6:.1f}M weights in {len(a)} tensors; stored {stored / 1e6:.2f} MB "
          f"(torch.save of bools: {plain / 1e6:.1f} MB, ratio {stored / plain:.3f})")
    for key in ("put", "get", "diff"):
        print(f"{key:5s} median {median[key] * 1e3:8.1f} ms   {megabytes / median[key]:8.0f} MB/s of bool weights")
    print(f"put / torch.save ratio {median['put'] / median['torch.save']:.2f}; "
          f"get / torch.load ratio {median['get'] / median['torch.load']:.2f}")


if __name__ == "__main__":
    main()
