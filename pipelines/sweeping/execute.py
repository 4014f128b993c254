"""Running a plan: finished runs are skipped, the others run on an executor as soon as their upstream run is done.

A run is finished when its directory holds `metrics.json` and `sweep_run.json` (written by the sweep after the
stage returned) with the same stage and arguments. An interrupted run is simply run again with the same
arguments: every stage resumes from its `checkpoint-last/`. A failed run is reported and its downstream runs are
marked blocked; the other runs go on.

Executors: `inline` (this process, one run at a time), `local` (N worker processes, the cores split between
them: each worker sets OMP_NUM_THREADS and torch.set_num_threads to cores // N) and `submitit` (one job per run,
SLURM or submitit's local mode). With `nproc_per_run` > 1 each run is launched under torchrun (DDP).
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from subnets.errors import SubnetsError
from subnets.extras import require
from subnets.io import atomic_write_json
from subnets.runs import METRICS_FILE
from subnets.threads import configure_threads, usable_cores

from .plan import Plan, Run
from .stages import get_stage

RECORD_FILE = "sweep_run.json"
COMPUTE_FILE = "sweep_compute.json"  # the finished run's wall seconds, device and threads (reports read it)
STATUS_FILE = "sweep_status.json"
EXECUTORS = ("local", "inline", "submitit")


def is_finished(directory: Path, run: Run) -> bool:
    record = directory / RECORD_FILE
    if not (directory / METRICS_FILE).is_file() or not record.is_file():
        return False
    try:
        return json.loads(record.read_text()) == run.record()
    except json.JSONDecodeError:
        return False


def set_threads(threads: int | None) -> None:
    """Give this process `threads` intra-op threads (the environment too, for the processes a run starts)."""
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        configure_threads(threads)


def execute_run(stage_name: str, argv: list[str], directory: str, record: dict[str, Any], threads: int | None = None,
                nproc_per_run: int = 1) -> dict[str, Any]:
    """Run one stage (in this process, or under torchrun) and return its outcome; never raises for a failed run."""
    set_threads(threads)
    stage = get_stage(stage_name)
    start = time.perf_counter()
    try:
        if nproc_per_run > 1:
            # --standalone: a rendezvous of its own on a free port (runs in flight at once never share one)
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                       str(nproc_per_run), "-m", stage.module, *argv]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")] or \
                    done.stderr.strip().splitlines()[-1:]
                raise SubnetsError(f"torchrun exited with status {done.returncode}: {' '.join(lines)[:500]}")
        else:
            stage.main(list(argv))
    except SubnetsError as e:
        return {"status": "failed", "error": str(e), "seconds": time.perf_counter() - start}
    except Exception as e:  # a crash of one run must not stop the sweep; its traceback goes to the status file
        return {"status": "failed", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(),
                "seconds": time.perf_counter() - start}
    seconds = time.perf_counter() - start
    atomic_write_json(Path(directory) / COMPUTE_FILE, {"seconds": seconds, "device": run_device(nproc_per_run),
                                                       "threads": threads or usable_cores()})
    atomic_write_json(Path(directory) / RECORD_FILE, record)
    return {"status": "done", "seconds": seconds}


def run_device(nproc_per_run: int) -> str:
    """The device a run had: `<n> x <GPU name>` where CUDA is visible (n = its processes), else the CPU."""
    import platform

    import torch

    if torch.cuda.is_available():
        return f"{nproc_per_run} x {torch.cuda.get_device_name(0)}"
    return f"cpu ({platform.processor() or platform.machine()})"


class Handle(Protocol):
    def done(self) -> bool: ...

    def result(self) -> dict[str, Any]: ...


class Executor(Protocol):
    capacity: int  # runs in flight at once

    def submit(self, fn: Callable[..., dict[str, Any]], *args: Any) -> Handle: ...

    def close(self) -> None: ...


class InlineExecutor:
    """Runs each run in this process when it is submitted (tests, debugging, a single worker)."""

    capacity = 1

    def submit(self, fn: Callable[..., dict[str, Any]], *args: Any) -> Handle:
        future: cf.Future = cf.Future()
        future.set_result(fn(*args))
        return future

    def close(self) -> None:
        pass


PR_SET_PDEATHSIG = 1  # prctl(2): the signal a Linux process gets when the thread that started it ends


def die_with_parent(parent: int) -> None:
    """End this worker when the sweep that started it (`parent`) dies, even by kill -9, so that no run goes on
    without its sweep, holding its run lock: Linux delivers SIGKILL (PR_SET_PDEATHSIG); elsewhere a thread
    watches the parent."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    else:
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:  # the sweep died before the signal was armed
        os.kill(os.getpid(), signal.SIGKILL)


def visible_gpus() -> list[str]:
    """The GPUs this process may use: $CUDA_VISIBLE_DEVICES if set, else every device torch counts."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def worker_gpus(workers: int, nproc_per_run: int, gpus: list[str]) -> list[str] | None:
    """$CUDA_VISIBLE_DEVICES of each local worker: `nproc_per_run` GPUs each, dealt round-robin over `gpus` (so
    that workers share GPUs only when there are fewer GPUs than processes); None without GPUs."""
    if not gpus:
        return None
    return [",".join(gpus[(w * nproc_per_run + i) % len(gpus)] for i in range(nproc_per_run)) for w in range(workers)]


def start_worker(parent: int, gpu_slots: Any) -> None:
    """A local worker's start-up: die with the sweep, and take one slot's GPUs (if any) before anything in this
    process touches CUDA."""
    die_with_parent(parent)
    if gpu_slots is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_slots.get()


class LocalExecutor:
    """N spawned worker processes (spawn, not fork: forking a process that has started torch threads can hang),
    which die with the sweep (`die_with_parent`); with GPUs, each worker sees its own (`worker_gpus`) for its
    whole life."""

    def __init__(self, workers: int, nproc_per_run: int = 1):
        self.capacity = workers
        context = multiprocessing.get_context("spawn")
        devices = worker_gpus(workers, nproc_per_run, visible_gpus())
        slots = None
        if devices is not None:
            slots = context.Queue()
            for device in devices:
                slots.put(device)
        self.pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=start_worker,
                                           initargs=(os.getpid(), slots))

    def submit(self, fn: Callable[..., dict[str, Any]], *args: Any) -> Handle:
        return self.pool.submit(fn, *args)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class SubmititExecutor:
    """One submitit job per run (SLURM where available; `cluster="local"` runs jobs as local processes)."""

    def __init__(self, folder: Path, workers: int, cluster: str | None = None, parameters: dict[str, Any] | None = None):
        submitit = require("submitit", extra="cluster", purpose="The submitit executor (or --executor local)")
        self.capacity = workers
        self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        if parameters:
            self.executor.update_parameters(**parameters)

    def submit(self, fn: Callable[..., dict[str, Any]], *args: Any) -> Handle:
        return self.executor.submit(fn, *args)

    def close(self) -> None:
        pass


def cores() -> int:
    """Cores this sweep may use: $OMP_NUM_THREADS if set, else the CPUs this process may run on."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return usable_cores()


@dataclass
class SweepSettings:
    executor: str = "local"
    workers: int = 1
    threads_per_worker: int | None = None  # default: cores() // workers
    nproc_per_run: int = 1
    submitit_cluster: str | None = None
    submitit_parameters: dict[str, Any] = field(default_factory=dict)

    def make_executor(self, output_dir: Path) -> Executor:
        if self.executor not in EXECUTORS:
            raise SubnetsError(f"Unknown --executor '{self.executor}'; expected one of {', '.join(EXECUTORS)}.")
        if self.workers < 1:
            raise SubnetsError(f"--workers {self.workers} must be at least 1.")
        if self.executor == "submitit":
            return SubmititExecutor(output_dir / "submitit", self.workers, self.submitit_cluster,
                                    self.submitit_parameters)
        if self.executor == "inline" or self.workers == 1:
            return InlineExecutor()
        return LocalExecutor(self.workers, self.nproc_per_run)

    def threads(self) -> int | None:
        if self.executor == "submitit":
            return self.threads_per_worker  # the job's own allocation decides by default
        return self.threads_per_worker or max(1, cores() // self.workers)


def run_plan(plan: Plan, settings: SweepSettings, *, poll_seconds: float = 0.2,
             log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Run every unfinished run of `plan`; returns {run name: outcome} and writes it to sweep_status.json."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SubnetsError("The sweep itself must not run under torchrun; expected a plain `python` launch with "
                           "--nproc_per_run N to run each stage under DDP.")
    outcomes: dict[str, dict[str, Any]] = {}
    waiting = []
    for run in plan.ordered():
        if is_finished(plan.directory(run), run):
            outcomes[run.name] = {"status": "skipped", "reason": "finished earlier"}
        else:
            waiting.append(run)
    executor = settings.make_executor(plan.output_dir)
    in_flight: dict[str, Handle] = {}
    progress = Progress(len(waiting))
    log(f"[sweep] {len(waiting)} runs to run, {len(outcomes)} finished earlier (skipped)")
    try:
        while waiting or in_flight:
            for run in list(waiting):
                upstream = outcomes.get(run.parent, {}).get("status") if run.parent else "done"
                if upstream in ("failed", "blocked"):
                    outcomes[run.name] = {"status": "blocked", "reason": f"upstream run {run.parent} {upstream}"}
                    waiting.remove(run)
                    log(f"[sweep] blocked {run.name} {progress.step()}")
                elif upstream in ("done", "skipped") and len(in_flight) < executor.capacity:
                    log(f"[sweep] start {run.name} ({progress.started()} of {progress.total})")
                    in_flight[run.name] = executor.submit(execute_run, run.stage, list(run.argv),
                                                          str(plan.directory(run)), run.record(), settings.threads(),
                                                          settings.nproc_per_run)
                    waiting.remove(run)
            finished = [name for name, handle in in_flight.items() if handle.done()]
            for name in finished:
                outcome = _result(in_flight.pop(name))
                outcomes[name] = outcome
                log(f"[sweep] {outcome['status']} {name} {progress.step()}"
                    + (f": {outcome['error']}" if "error" in outcome else ""))
            if not finished and in_flight:
                time.sleep(poll_seconds)
    finally:
        executor.close()
        atomic_write_json(plan.output_dir / STATUS_FILE, outcomes)
    return outcomes


class Progress:
    """k of N runs of this invocation finished, with the elapsed time and an ETA (elapsed / k x runs left)."""

    def __init__(self, total: int):
        self.total, self.finished, self.launched, self.start = total, 0, 0, time.monotonic()

    def started(self) -> int:
        self.launched += 1
        return self.launched

    def step(self) -> str:
        self.finished += 1
        elapsed = time.monotonic() - self.start
        eta = elapsed / self.finished * (self.total - self.finished)
        return f"({self.finished} of {self.total} finished, elapsed {_clock(elapsed)}, ETA {_clock(eta)})"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _result(handle: Handle) -> dict[str, Any]:
    """A handle's outcome; a job that died without returning one (killed worker, lost SLURM job) is a failure."""
    try:
        return handle.result()
    except Exception as e:
        return {"status": "failed", "error": f"the worker died ({type(e).__name__}: {e})"}
