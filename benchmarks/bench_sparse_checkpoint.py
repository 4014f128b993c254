"""Sparse checkpoint size vs dense and vs the bound, for a BERT-base-size classifier at 50/70/90% sparsity.

Run: python benchmarks/bench_sparse_checkpoint.py [--device cuda]   (model and masks on that device)
Bound (docs/methods.md): 1.05 x (kept values x bytes + 1 bit per masked weight) + the unmasked parameters. Masks cover the
72 encoder matrices and the pooler; the rest (embeddings, LayerNorms, biases, classifier) is stored dense.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModelForSequenceClassification, BertConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_device_option, device_from  # noqa: E402

from subnets.masks import apply_masks  # noqa: E402
from subnets.masks.checkpoint import (checkpoint_bytes, load_sparse_state_dict,  # noqa: E402
                               save_sparse_checkpoint, size_bound)
from subnets.targets import find_targets  # noqa: E402
from subnets.weights import plain_state_dict  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_option(parser)
    device = device_from(parser.parse_args())
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(BertConfig()).to(device)
    dense_state = {k: v.clone() for k, v in model.state_dict().items()}
    targets = find_targets(model, pooler=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        save_file({k: v.contiguous() for k, v in dense_state.items()}, str(root / "dense.safetensors"))
        dense = (root / "dense.safetensors").stat().st_size
        print(f"dense fp32 safetensors: {dense / 1e6:.1f} MB ({sum(t.numel for t in targets) / 1e6:.1f}M masked weights)")
        print("sparsity  sparse MB  bound MB  size/bound  size/dense  save s  load s  lossless")
        for sparsity in (0.5, 0.7, 0.9):
            model.load_state_dict(dense_state)
            g = torch.Generator().manual_seed(1)
            masks = {t.name: (torch.rand(t.shape, generator=g) >= sparsity).to(device) for t in targets}
            apply_masks(model, masks)
            out = root / f"sparse{sparsity}"
            start = time.perf_counter()
            save_sparse_checkpoint(model, masks, out)
            saved = time.perf_counter()
            state = load_sparse_state_dict(out)
            loaded = time.perf_counter()
            # the loaded state is on the CPU, the model possibly on CUDA: compare on the CPU
            lossless = all(torch.equal(state[k], v.cpu()) for k, v in plain_state_dict(model).items())
            size, bound = checkpoint_bytes(out), size_bound(plain_state_dict(model), masks)
            print(f"{sparsity:8.0%}  {size / 1e6:9.1f}  {bound / 1e6:8.1f}  {size / bound:10.3f}  {size / dense:10.3f}"
                  f"  {saved - start:6.2f}  {loaded - saved:6.2f}  {lossless}")


if __name__ == "__main__":
    main()
