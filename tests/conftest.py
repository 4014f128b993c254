import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The suite means the same on every machine: the CPU, even where CUDA is available (and so float32, not bf16);
# tests/test_cuda.py asks for CUDA itself.
os.environ.setdefault("SUBNETS_USE_CPU", "1")

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: uses the real small model (minilm) or real data; still runs in CI")
    # Tiny models gain nothing from intra-op threads, and on a shared 2-core machine every multi-threaded op
    # waits for a descheduled worker thread (steps up to 25x slower under load).
    torch.set_num_threads(1)


@pytest.fixture(params=["bert", "roberta"])
def tiny(request):
    """(model, tokenizer) for a tiny random BERT and a tiny random RoBERTa."""
    from subnets.models import tiny_model

    return tiny_model(request.param)


@pytest.fixture
def tiny_bert():
    from subnets.models import tiny_model

    return tiny_model("bert")


@pytest.fixture
def shared_data_dir() -> Path:
    """The real offline data folder: $SUBNETS_DATA_DIR, else ../shared/data beside the repository; skip if absent."""
    candidates = [os.environ.get("SUBNETS_DATA_DIR"), REPO.parent / "shared" / "data"]
    for c in candidates:
        if c and (Path(c) / "glue").is_dir():
            return Path(c)
    pytest.skip("the offline data folder is not available")


@pytest.fixture
def tiny_data_dir(tmp_path) -> Path:
    """A data folder with a small learnable SST-2 (glue/SST-2/train.tsv: 96 rows, dev.tsv: 32 rows)."""
    from subnets.toydata import write_toy_task

    root = tmp_path / "data"
    write_toy_task(root, "sst2", train=96, evaluation=32)
    return root


@pytest.fixture
def tiny_model_dir(tmp_path):
    """Factory: save a tiny random model of a family (with sentiment labels) and return its directory."""
    from subnets.models import tiny_model

    def make(kind: str = "bert", label_names: tuple[str, ...] = ("negative", "positive")) -> Path:
        model, tokenizer = tiny_model(kind, label_names=label_names)
        directory = tmp_path / f"tiny-{kind}"
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        return directory

    return make
