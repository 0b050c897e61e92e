"""Writing exports safely: each file is written to a temporary name beside it, then renamed.

A crash, a full disk or an exception half-way leaves no half-written export behind, and an
existing file is never replaced unless the caller says ``overwrite=True``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def output_folder(out: str | os.PathLike, name: str = "out") -> Path:
    """``out`` as a folder that exists (created if missing) and can be written to, else a ValueError
    naming the argument ``name``."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{name} must be a folder, but {str(folder)!r} is a file")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(
            f"{name} folder {str(folder)!r} cannot be created: {error.strerror}"
        ) from error
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{name} folder {str(folder)!r} is not writable")
    return folder


class BusyError(ValueError):
    """Another process holds the lock on what this one was about to write."""


@contextmanager
def exclusive_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block, or raise
    ``BusyError`` at once if another process holds it. The operating system drops the lock when its
    holder exits, however it exits, so a killed run never leaves a stale lock behind."""
    import fcntl  # POSIX; the course runs on Linux and macOS

    handle = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise BusyError(
                f"{str(path.parent)!r} is in use by another {what} ({holder}); wait for it to "
                "finish or give this run another folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


def refuse_existing(paths: list[Path], overwrite: bool) -> None:
    """Raise FileExistsError naming the first of ``paths`` that exists, unless ``overwrite``."""
    if overwrite:
        return
    for path in paths:
        if path.exists():
            raise FileExistsError(
                f"{str(path)!r} already exists (pass overwrite=True to replace it)"
            )


def atomic_write(path: Path, write: Callable[[Path], None], overwrite: bool = False) -> int:
    """Call ``write(temporary_path)``, then rename the result onto ``path``; return its size in bytes.

    The temporary file lives in ``path``'s folder so the rename is atomic; it is removed if
    ``write`` fails.
    """
    path = Path(path)
    refuse_existing([path], overwrite)
    handle, name = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        size = temporary.stat().st_size
        if not overwrite and path.exists():  # appeared while we were writing
            raise FileExistsError(
                f"{str(path)!r} already exists (pass overwrite=True to replace it)"
            )
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return size


def write_bytes(path: Path, data: bytes, overwrite: bool = False) -> int:
    """``atomic_write`` of ``data``."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), overwrite)
