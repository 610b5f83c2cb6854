"""One numba compile cache for `make` and direct commands, keyed on the kernels' sources."""

import shutil
import subprocess
from pathlib import Path

import pytest

from rehearsal import numba_cache

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_and_direct_commands_use_the_same_cache_folder():
    out = subprocess.run(
        ["make", "-s", "--no-print-directory", "--eval=print-cache: ; @echo $$NUMBA_CACHE_DIR", "print-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout.strip()
    assert out == str(numba_cache.cache_dir(ROOT))
    assert Path(out).parent == ROOT / ".numba_cache"


def test_the_folder_changes_with_any_kernel_source(tmp_path):
    for package in numba_cache.KERNEL_PACKAGES:
        (tmp_path / package / "sub").mkdir(parents=True)
        (tmp_path / package / "sub" / "k.py").write_text("x = 1\n")
    before = numba_cache.kernel_hash(tmp_path)
    assert numba_cache.kernel_hash(tmp_path) == before and len(before) == 16
    (tmp_path / "netcode" / "sub" / "k.py").write_text("x = 2\n")
    assert numba_cache.kernel_hash(tmp_path) != before
    (tmp_path / "other.py").write_text("not a kernel\n")
    assert numba_cache.cache_dir(tmp_path).parent == tmp_path / ".numba_cache"


def test_a_cache_folder_set_by_the_caller_is_kept():
    env = {"NUMBA_CACHE_DIR": "/somewhere"}
    assert numba_cache.apply(env) == "/somewhere"
    env = {}
    assert numba_cache.apply(env) == str(numba_cache.cache_dir()) == env["NUMBA_CACHE_DIR"]
