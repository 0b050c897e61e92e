"""Writing exports safely: each file is written to a temporary name beside it, then renamed.

A crash, a full disk or an exception half-way leaves no half-written export behind, and an
existing file is never replaced unless the caller says ``overwrite=True``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def output_folder(out: str | os.PathLike) -> Path:
    """``out`` as a folder that exists (created if missing) and can be written to, else a ValueError."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"out must be a folder, but {str(folder)!r} is a file")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(
            f"out folder {str(folder)!r} cannot be created: {error.strerror}"
        ) from error
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"out folder {str(folder)!r} is not writable")
    return folder


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
