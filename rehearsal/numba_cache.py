"""One numba compile cache for `make` and for direct commands: the folder is keyed on the kernels' sources.

numba's cache does not notice when a kernel calls a changed kernel in another file, so the cache folder is
named after a hash of every ``physics/`` and ``netcode/`` source: any change there compiles afresh, and an
unchanged tree reuses what `make demo`, `make test` or `rehearsal serve` compiled before. The Makefile runs
this file (``python3 rehearsal/numba_cache.py`` prints the folder) and ``rehearsal/__init__.py`` applies the same
rule when NUMBA_CACHE_DIR is not set, before numba is imported. Standard library only: make runs it before
the virtualenv exists.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout (or site-packages): physics/, netcode/, rehearsal/
KERNEL_PACKAGES = ("physics", "netcode")


def kernel_hash(root: Path = ROOT) -> str:
    """16 hex digits of SHA-256 over the kernel packages' ``*.py`` files (their paths and contents, sorted)."""
    digest = hashlib.sha256()
    for package in KERNEL_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cache_dir(root: Path = ROOT) -> Path:
    """``<checkout>/.numba_cache/<hash>``; where the checkout is not writable (an installed package), the
    user's cache folder instead."""
    base = root / ".numba_cache" if os.access(root, os.W_OK) else Path.home() / ".cache" / "rehearsal" / "numba"
    return base / kernel_hash(root)


def apply(environ: os._Environ | dict = os.environ) -> str:
    """Set NUMBA_CACHE_DIR by this rule unless it is set already; returns the folder in force."""
    if not environ.get("NUMBA_CACHE_DIR"):
        environ["NUMBA_CACHE_DIR"] = str(cache_dir())
    return environ["NUMBA_CACHE_DIR"]


if __name__ == "__main__":
    print(cache_dir())
