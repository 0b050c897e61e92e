"""Writing exports safely: each file is written to a temporary name beside it, then renamed.

A crash, a full disk or an exception half-way leaves no half-written export behind, and an
existing file is never replaced unless the caller says ``overwrite=True``. Files that belong
together (an export and its metadata) are written as a unit: ``atomic_write_group``.
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


def _umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temporary(path: Path, kind: str) -> Path:
    """A new empty hidden file beside ``path``, named after it and this process (so a later write can
    tell a dead process's leftovers), with the mode a plain ``open`` would give (``mkstemp`` gives 0600)."""
    handle, name = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=f".{kind}{path.suffix}", dir=path.parent
    )
    os.close(handle)
    os.chmod(name, 0o666 & ~_umask())
    return Path(name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporaries of ``path`` left by processes that no longer run (killed mid-write);
    an old file such a process had set aside and not yet replaced is put back."""
    removed = []
    prefix = f".{path.name}."
    for entry in path.parent.iterdir() if path.parent.is_dir() else []:
        rest = entry.name[len(prefix) :] if entry.name.startswith(prefix) else ""
        pid, _, tail = rest.partition(".")
        if pid.isdigit() and (".tmp" in tail or ".old" in tail) and not _alive(int(pid)):
            if ".old" in tail and not path.exists():  # killed after setting the old file aside
                os.replace(entry, path)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _refuse_folders(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            raise ValueError(
                f"{str(path)!r} is a folder where a file is to be written; move or remove it"
            )


def atomic_write_group(
    writes: list[tuple[Path, Callable[[Path], object]]], overwrite: bool = False
) -> list[int]:
    """Write several files as a unit (an export and its metadata); return their sizes in bytes.

    Each ``write(temporary_path)`` runs in turn (a later one may use what an earlier one found);
    only when all have succeeded are the files swapped into place, the old ones kept aside until
    every new one is in. Any failure (an exception, a folder where a file goes, a full disk) removes
    the temporaries and leaves the previous files as they were. Modes follow the umask. A process
    killed during the swap (two renames per file) can leave a mixed pair; the next write of the same
    files removes its leftovers and puts back an old file it had set aside but not replaced.
    """
    paths = [Path(path) for path, _ in writes]
    refuse_existing(paths, overwrite)
    _refuse_folders(paths)
    for path in paths:
        remove_stale_temporaries(path)
    temporaries: list[Path] = []
    try:
        sizes = []
        for path, write in writes:
            temporaries.append(_temporary(Path(path), "tmp"))
            write(temporaries[-1])
            os.chmod(temporaries[-1], 0o666 & ~_umask())  # a writer may have recreated the file
            sizes.append(temporaries[-1].stat().st_size)
        refuse_existing(paths, overwrite)  # one may have appeared while we were writing
        _refuse_folders(paths)
        _swap(paths, temporaries)
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
    return sizes


def _swap(paths: list[Path], temporaries: list[Path]) -> None:
    """Rename each temporary onto its path, keeping the old files aside until all are in place;
    on any failure put the old files back and remove the new ones."""
    placed: list[tuple[Path, Path | None]] = []  # (path, its old file set aside, if it had one)
    try:
        for path, temporary in zip(paths, temporaries, strict=True):
            old = None
            if path.exists():
                old = _temporary(path, "old")
                os.replace(path, old)
            placed.append((path, old))
            os.replace(temporary, path)
    except BaseException:
        for path, old in reversed(placed):
            if old is not None:
                os.replace(old, path)
            else:
                path.unlink(missing_ok=True)
        raise
    for _, old in placed:
        if old is not None:
            old.unlink(missing_ok=True)


def atomic_write(path: Path, write: Callable[[Path], object], overwrite: bool = False) -> int:
    """Call ``write(temporary_path)``, then rename the result onto ``path``; return its size in bytes.

    The temporary file lives in ``path``'s folder so the rename is atomic; it is removed if
    ``write`` fails. Its mode follows the umask.
    """
    return atomic_write_group([(Path(path), write)], overwrite)[0]


def write_bytes(path: Path, data: bytes, overwrite: bool = False) -> int:
    """``atomic_write`` of ``data``."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), overwrite)


def torch_save(obj: object, path: str | os.PathLike) -> None:
    """``torch.save`` through an open file: the archive's folder inside is then ``archive/``, not the
    file's own name, so a file first written to a temporary name (as ``atomic_write`` does) holds the
    same bytes however and wherever it was written."""
    import torch

    with open(path, "wb") as file:
        torch.save(obj, file)
