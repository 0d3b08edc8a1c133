"""Helpers shared by the dataset loaders: downloads, archives read in place, options.

- :func:`download` fetches one URL to a file (with a timeout, atomically);
- :class:`FileTree` reads the files of a zip archive or of an extracted folder
  through one interface, so a loader accepts either;
- :func:`fingerprint` hashes names, sizes and modification times (cache keys);
- :func:`as_list` parses comma-list options coming from the CLI or from Python.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
import zipfile
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

DEFAULT_TIMEOUT = 60.0


class DownloadError(OSError):
    """A download that failed; ``str(exc)`` is a short reason for a one-line message."""


def download(url: str, dest: Path, timeout: float = DEFAULT_TIMEOUT) -> Path:
    """Fetch ``url`` into the file ``dest`` (parent folders created) and return ``dest``.

    The bytes go to ``dest.part`` first and are renamed when complete, so an
    interrupted download never leaves a truncated file under the final name.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
        os.replace(part, dest)
    except (OSError, ValueError) as exc:  # URLError, HTTPError and timeouts are OSErrors
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise DownloadError(f"{url}: {reason}") from exc
    return dest


def fingerprint(paths: Iterable[Path], *extra: object) -> str:
    """SHA-256 (hex, 16 chars) of the names, sizes and mtimes of ``paths`` plus ``extra``.

    Folders are fingerprinted by every file below them, so adding or touching
    an image invalidates the key; a zip by its own size and mtime.
    """
    h = hashlib.sha256()
    for path in paths:
        path = Path(path)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            st = f.stat()
            h.update(f"{f.relative_to(path.parent)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    h.update(repr(extra).encode())
    return h.hexdigest()[:16]


class FileTree(AbstractContextManager):
    """The files below ``prefix`` of a zip archive or a folder, as posix relative names.

    ``FileTree(Path("x.zip"), "images_background")`` and
    ``FileTree(Path("images_background"))`` list the same names
    (``Greek/character01/0394_01.png``, ...). Use as a context manager.
    """

    def __init__(self, path: Path, prefix: str = "") -> None:
        self.path = Path(path)
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._zip = zipfile.ZipFile(self.path) if self.path.is_file() else None

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def names(self) -> list[str]:
        """Sorted relative names of the files (not folders) in the tree."""
        if self._zip is not None:
            n = len(self.prefix)
            return sorted(m[n:] for m in self._zip.namelist()
                          if m.startswith(self.prefix) and not m.endswith("/"))
        return sorted(p.relative_to(self.path).as_posix()
                      for p in self.path.rglob("*") if p.is_file())

    def open(self, name: str):  # -> BinaryIO
        """A binary file object for ``name`` (a relative name from :meth:`names`)."""
        if self._zip is not None:
            return self._zip.open(self.prefix + name)
        return open(self.path / name, "rb")


def as_list(value: str | Sequence[str] | None) -> list[str]:
    """``"a, b"`` or ``["a", "b"]`` -> ``["a", "b"]``; ``None`` or ``""`` -> ``[]``."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [s.strip() for s in items if str(s).strip()]
