"""Safe writes: temp file or folder + rename, recovery from an interrupted swap, output checks and run locks.

Files and folders are created with the permissions the umask allows (like `open()` and `mkdir`), not the
private 0600 / 0700 of `tempfile`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import SubnetsError

LOCK_FILE = ".lock"
_held_locks: dict[Path, int] = {}  # folders this process has locked -> nesting depth


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_temp_dir(parent: str | os.PathLike, prefix: str, suffix: str = "") -> Path:
    """A new empty folder under `parent` with the umask's permissions (tempfile alone gives 0700)."""
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix, suffix=suffix))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def _disk_full(error: BaseException, path: Path, kept: str) -> None:
    """Raise one clear error if `error` is a full disk (or quota) while writing `path`; `kept` says what is left."""
    codes = (errno.ENOSPC, errno.EDQUOT)
    # safetensors reports the OS error inside its own exception type: "... No space left on device (os error 28)"
    if (error.errno in codes) if isinstance(error, OSError) else any(f"(os error {c})" in str(error) for c in codes):
        raise SubnetsError(f"No space left to write {path} (disk full or quota exceeded); {kept}: free some space "
                           f"and rerun the same command to continue.") from error


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _disk_full(e, path, "the previous version of the file, if any, is kept")
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def _previous(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def recover_interrupted_swap(path: str | os.PathLike) -> bool:
    """Put back the previous folder if a crash hit between the two renames of `atomic_dir` (True if it did)."""
    path = Path(path)
    old = _previous(path)
    if old.is_dir() and not path.exists():
        os.replace(old, path)
        return True
    return False


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory that replaces `path` as a whole when the block succeeds.

    The previous directory (if any) is kept until the new one is in place, so a crash at any point leaves
    either the old or the new complete directory, or the old one as `.<name>.old` (see
    `recover_interrupted_swap`), plus at worst a stale temporary one (see `remove_stale_temps`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted_swap(path)
    tmp = make_temp_dir(path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        yield tmp
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        _disk_full(e, path, f"the last complete {path.name} is kept" if path.exists() else "nothing was written there")
        raise
    old = _previous(path)
    if old.exists():
        shutil.rmtree(old)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def remove_stale_temps(directory: str | os.PathLike) -> list[str]:
    """Delete the temporary files and folders (`.<name>.*.tmp`) a crashed writer left in `directory`.

    Only safe while no other process writes there (hold `directory_lock`). Returns the names removed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for entry in directory.iterdir():
        if entry.name.startswith(".") and entry.name.endswith(".tmp"):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            removed.append(entry.name)
    return removed


def empty_run_folder(directory: str | os.PathLike) -> None:
    """Remove everything in a run folder but its lock (`--overwrite_output_dir`: a run is what its command says),
    once the caller has checked that the folder holds a run of this toolkit and none of the run's inputs."""
    for entry in Path(directory).iterdir():
        if entry.name != LOCK_FILE:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def check_writable_dir(path: str | os.PathLike, what: str = "Output directory") -> None:
    """Refuse, before anything is written, a folder that is a file, lies under a file or cannot be written."""
    path = Path(path).absolute()
    if path.exists() and not path.is_dir():
        raise SubnetsError(f"{what} {path} is a file; expected a directory (or a path that does not exist yet).")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise SubnetsError(f"{what} {path} lies under {existing}, which is a file; expected a path under a directory.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SubnetsError(f"{what} {path} cannot be written ({existing} is read-only); expected a writable location.")


@contextlib.contextmanager
def directory_lock(directory: str | os.PathLike, *, enabled: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on `directory` (created if needed) so that no second run can use it meanwhile.

    The lock is an `fcntl.flock` on `<directory>/.lock`, released when the block ends or the process dies.
    Re-entrant within a process (a stage script and its Trainer may both take it).
    """
    key = Path(directory).resolve()
    if not enabled or key in _held_locks:
        if enabled:
            _held_locks[key] += 1
        try:
            yield
        finally:
            if enabled:
                _held_locks[key] -= 1
        return
    key.mkdir(parents=True, exist_ok=True)
    fd = os.open(key / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
        os.close(fd)
        raise SubnetsError(f"{key} is in use by another run (it holds {LOCK_FILE}); expected one run per output "
                           f"directory: wait for that run to end or choose another --output_dir.") from e
    _held_locks[key] = 1
    try:
        yield
    finally:
        del _held_locks[key]
        os.close(fd)  # releases the lock
