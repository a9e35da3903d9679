"""DRP's file space on disk: a temporary directory the simulator owns, with each file's
sha256 and a count of completed downloads. Thread-safe: tests put files from their own thread
while the server streams them on its loop.

Paths are relative, ``/``-separated, without empty, ``.`` or ``..`` segments
(:func:`check_path`); they map to files under the store's root and nowhere else.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

#: Bytes read or written per step when copying or hashing.
CHUNK_BYTES = 1024 * 1024


class FilePathError(ValueError):
    """A file path the store refuses (absolute, ``..``, empty segments)."""


class FileConflictError(Exception):
    """A path that cannot be a file here (a directory is in the way, or a file is)."""


def check_path(path: str) -> str:
    """``path`` when it is a usable relative file path.

    Raises:
        FilePathError: it is empty, absolute, or has empty, ``.``, ``..`` or ``\\`` segments.
    """
    if not path or path.startswith("/") or "\\" in path or "\x00" in path:
        raise FilePathError(f"bad file path {path!r}: relative paths only")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise FilePathError(f"bad file path {path!r}: no empty, '.' or '..' segments")
    return path


class OpenedFile:
    """A file opened for download: its handle, size in bytes and sha256 (hex), consistent
    with each other even if the path is replaced meanwhile."""

    def __init__(self, handle: BinaryIO, size: int, sha256: str) -> None:
        self.handle = handle
        self.size = size
        self.sha256 = sha256


class FileStore:
    """Files under a temporary directory, removed by :meth:`close`."""

    def __init__(self) -> None:
        self._base = Path(tempfile.mkdtemp(prefix="drpsim-files-"))
        self.root = self._base / "files"
        self._incoming = self._base / "incoming"
        self.root.mkdir()
        self._incoming.mkdir()
        self._sums: dict[str, str] = {}
        self._downloads: Counter[str] = Counter()
        self._lock = threading.Lock()

    def close(self) -> None:
        """Remove every file and the directory."""
        shutil.rmtree(self._base, ignore_errors=True)

    # ---- writing -----------------------------------------------------------------------------

    def begin(self) -> tuple[BinaryIO, Path]:
        """A fresh temporary file to write an upload into, and its path (for :meth:`commit`)."""
        fd, name = tempfile.mkstemp(dir=self._incoming)
        return os.fdopen(fd, "wb"), Path(name)

    def commit(self, path: str, staged: Path, sha256: str) -> None:
        """Make the fully written ``staged`` file the content of ``path`` (atomic replace).

        Raises:
            FilePathError: a bad path.
            FileConflictError: a directory is at ``path``, or a file where a directory must be.
        """
        target = self.root / check_path(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_dir():
                raise IsADirectoryError(str(target))
            with self._lock:
                os.replace(staged, target)
                self._sums[path] = sha256
        except (NotADirectoryError, IsADirectoryError, FileExistsError) as exc:
            staged.unlink(missing_ok=True)
            raise FileConflictError(f"{path}: {exc}") from exc

    def put(self, path: str, data: bytes | Path) -> str:
        """Store ``data`` (bytes, or a file copied in chunks) at ``path``; returns its sha256.

        Raises:
            FilePathError: a bad path.
            FileConflictError: see :meth:`commit`.
            OSError: ``data`` names a file that cannot be read.
        """
        check_path(path)
        digest = hashlib.sha256()
        out, staged = self.begin()
        try:
            with out:
                for chunk in _chunks(data):
                    digest.update(chunk)
                    out.write(chunk)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        sha = digest.hexdigest()
        self.commit(path, staged, sha)
        return sha

    def delete(self, path: str) -> bool:
        """Remove the file at ``path``; False when there was none.

        Raises:
            FilePathError: a bad path.
        """
        target = self.root / check_path(path)
        with self._lock:
            self._sums.pop(path, None)
            try:
                target.unlink()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return False
        return True

    # ---- reading -----------------------------------------------------------------------------

    def sha256(self, path: str) -> str | None:
        """The sha256 (hex) of the file at ``path``, or None when there is none."""
        with self._lock:
            return self._sums.get(check_path(path))

    def open(self, path: str) -> OpenedFile | None:
        """Open the file at ``path`` for reading (the caller closes it); None when absent.

        Raises:
            FilePathError: a bad path.
        """
        target = self.root / check_path(path)
        with self._lock:
            sha = self._sums.get(path)
            if sha is None:
                return None
            handle = target.open("rb")
        return OpenedFile(handle, os.fstat(handle.fileno()).st_size, sha)

    def listdir(self, path: str) -> list[str] | None:
        """Names in directory ``path`` ("" is the root), directories ending in ``/``, sorted;
        None when there is no such directory.

        Raises:
            FilePathError: a bad path.
        """
        where = self.root / check_path(path) if path else self.root
        if not where.is_dir():
            return None
        return sorted(p.name + "/" if p.is_dir() else p.name for p in where.iterdir())

    def count_download(self, path: str) -> None:
        """Record one completed download of ``path``."""
        with self._lock:
            self._downloads[path] += 1

    def downloads(self) -> Counter[str]:
        """Completed downloads per path (a copy)."""
        with self._lock:
            return Counter(self._downloads)


def _chunks(data: bytes | Path) -> Iterable[bytes]:
    if isinstance(data, bytes):
        yield data
        return
    with data.open("rb") as src:
        while chunk := src.read(CHUNK_BYTES):
            yield chunk
