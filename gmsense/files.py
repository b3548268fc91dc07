"""Writing outputs safely: exports, reports and synthetic scenes.

Every output goes to a temporary name in the target's folder, is flushed to disk (fsync) and is
then renamed into place, so a reader never sees a half-written file and a failed run leaves
nothing behind. A target that exists and is not a regular file (a symbolic link, a FIFO, a
device such as ``/dev/full``, a directory) is refused rather than replaced. Failures of the
file system become one clear message: a place that cannot be written (read-only, permission
denied, not a folder) is the user's input (exit 2); a full disk is the environment (exit 1).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from gmsense.errors import GmsenseError, InputError

FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR)
# GDAL, pyogrio and matplotlib do not always raise OSError: recognise the C library's messages.
_MESSAGES = {os.strerror(code).lower(): code for code in (*FULL_DISK, *NOT_WRITABLE)}
_MESSAGES["not enough space"] = errno.ENOSPC  # GDAL's own wording for a short write


class OutputError(GmsenseError):
    """An output could not be written because of the environment (a full disk, an I/O error)."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_target(out: Path | str) -> Path:
    """``out`` as a Path, or an InputError when it exists and is not a regular file (it would be
    replaced by the output) or its folder is not a folder."""
    out = Path(out)
    try:
        info = out.lstat()
    except FileNotFoundError:
        info = None
    except NotADirectoryError:
        raise InputError(f"cannot write {out}: a part of its folder is a file, not a folder; "
                         "choose another output path") from None
    if info is not None:
        if stat.S_ISLNK(info.st_mode):
            raise InputError(f"refusing to write {out}: it is a symbolic link (the link, not its target, would "
                             "be replaced); give the real path or a new file name")
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"refusing to write {out}: it is {_kind(info.st_mode)}, not a regular file; "
                             "give a path to a new or regular file")
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise InputError(f"cannot write {out}: {parent} is not a folder; choose another output path")
    return out


def os_error_code(exc: BaseException) -> int | None:
    """The errno behind ``exc`` (an OSError, or a GDAL / pyogrio error quoting the C library),
    following causes; None when it is not a file-system failure we recognise."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return current.errno
        text = str(current).lower()
        for message, code in _MESSAGES.items():
            if message in text:
                return code
        current = current.__cause__ or current.__context__
    return None


def output_error(exc: BaseException, path: Path | str) -> GmsenseError | None:
    """A clear error for a failure of writing ``path``, or None when ``exc`` is not about the
    file system."""
    if isinstance(exc, GmsenseError):
        return exc
    code = os_error_code(exc)
    if code is None:
        return OutputError(f"could not write {path}: {exc}") if isinstance(exc, OSError) else None
    if code in FULL_DISK:
        return OutputError(f"disk full at {path}: free space (or choose another --out) and rerun")
    if code in NOT_WRITABLE:
        reason = {errno.EROFS: "the file system is read-only", errno.ENOTDIR: "a part of its folder is not a folder",
                  errno.EISDIR: "it is a directory"}.get(code, "permission denied")
        return InputError(f"cannot write {path}: {reason}; choose another output path")
    return OutputError(f"could not write {path}: {os.strerror(code)}")


def reraise_as_output_error(exc: BaseException, path: Path | str) -> NoReturn:
    """Re-raise ``exc`` (inside its ``except`` block) as the clear error :func:`output_error`
    gives for it, or unchanged when it is not about writing ``path``."""
    mapped = output_error(exc, path)
    if mapped is None or mapped is exc:
        raise exc
    raise mapped from exc


def ensure_folder(folder: Path | str) -> Path:
    """Create ``folder`` (and its parents) or raise a clear error."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(f"cannot write into {folder}: it exists and is not a folder; choose another output path") \
            from None
    except OSError as exc:
        raise output_error(exc, folder) from None  # type: ignore[misc]
    return folder


def fsync_path(path: Path) -> None:
    """Flush a written file (or a folder's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fsync_path(Path(root) / name)
        fsync_path(Path(root))


@contextmanager
def atomic_file(out: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``out`` to write the output to (it does not exist yet, as
    GDAL drivers want); on success flush it and rename it to ``out``; on any failure remove it
    and turn file-system failures into clear errors. The folder is created and checked to be
    writable before the caller does any work."""
    out = check_target(out)
    folder = ensure_folder(out.parent)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=f".partial{out.suffix}", dir=folder)
        os.close(fd)
    except OSError as exc:
        raise output_error(exc, out) from None  # type: ignore[misc]
    tmp = Path(name)
    tmp.unlink()
    try:
        yield tmp
        if not tmp.is_file():
            raise OutputError(f"could not write {out}: the writer produced no file")
        fsync_path(tmp)
        tmp.replace(out)
        fsync_path(folder)
    except BaseException as exc:
        reraise_as_output_error(exc, out)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_folder(out: Path | str) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success flush its files and rename it to
    ``out`` (an existing ``out`` folder is replaced only then); on failure remove it."""
    out = Path(out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise InputError(f"refusing to write into {out}: it exists and is not a folder; choose another output path")
    parent = ensure_folder(out.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=parent))
    except OSError as exc:
        raise output_error(exc, out) from None  # type: ignore[misc]
    old: Path | None = None
    try:
        yield tmp
        _fsync_tree(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=parent))
            out.replace(old / out.name)
        tmp.replace(out)
        fsync_path(parent)
    except BaseException as exc:
        if old is not None and (old / out.name).exists() and not out.exists():
            (old / out.name).replace(out)  # put the previous result back
        reraise_as_output_error(exc, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_bytes(out: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``out`` atomically (see :func:`atomic_file`); returns ``out``."""
    with atomic_file(out) as tmp, tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(out)
