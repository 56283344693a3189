"""Where small files derived from a dataset live (subset lists, labeled/unlabeled splits).

Next to the data by default, so every run on every machine reuses the same file; when the data sits on a
read-only mount, under the run's cache folder if one is configured, else an error naming the config key
that sets the path.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def writable(folder: str | os.PathLike) -> bool:
    """True when a file can be created in ``folder`` (or in the nearest existing parent, which would hold it).

    Tried for real (a temporary file) rather than with ``os.access``: root and read-only mounts disagree.
    """
    folder = Path(folder).absolute()
    while not folder.exists():
        if folder.parent == folder:
            return False
        folder = folder.parent
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            return True
    except OSError:
        return False


def side_file(preferred: str | os.PathLike, cache_dir: str | os.PathLike | None, key: str) -> Path:
    """``preferred`` when it exists or can be written; else a per-folder unique name under ``cache_dir``.

    Raises PermissionError naming ``key`` (the config key that sets the path) when neither is possible.
    """
    preferred = Path(preferred)
    if preferred.is_file() or writable(preferred.parent):
        return preferred
    if cache_dir is not None:
        tag = hashlib.sha256(str(preferred.parent.resolve()).encode()).hexdigest()[:10]
        fallback = Path(cache_dir) / "side_files" / f"{tag}_{preferred.name}"
        if writable(fallback.parent):
            return fallback
    raise PermissionError(
        f"{preferred.parent} is read-only, so {preferred.name} cannot be written next to the data; "
        f"set {key}=<a writable path>"
        + ("" if cache_dir is None else f" (the cache folder {cache_dir} is not writable either)")
    )
