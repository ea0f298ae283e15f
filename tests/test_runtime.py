"""neurorad.runtime: NumPy's huge-page advice is switched off only where the kernel would stall on it; glibc's
allocator keeps freed memory for the next large array."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neurorad.runtime import (
    configure_numpy_hugepages,
    malloc_mode_wanted,
    numpy_hugepage_advice_wanted,
    thp_defrag_mode,
)

multiarray = np._core.multiarray


@pytest.fixture()
def restore_numpy_advice():
    before = multiarray._get_madvise_hugepage()
    yield
    multiarray._set_madvise_hugepage(before)


@pytest.mark.parametrize(("text", "mode"), [
    ("always defer defer+madvise [madvise] never\n", "madvise"),
    ("always defer [defer+madvise] madvise never\n", "defer+madvise"),
    ("[always] defer defer+madvise madvise never\n", "always"),
    ("always defer defer+madvise madvise [never]\n", "never"),
    ("garbled\n", None),
])
def test_defrag_mode_is_the_bracketed_word(tmp_path, text, mode):
    p = tmp_path / "defrag"
    p.write_text(text)
    assert thp_defrag_mode(p) == mode


def test_defrag_mode_of_a_missing_file_is_none(tmp_path):
    assert thp_defrag_mode(tmp_path / "absent") is None


@pytest.mark.parametrize(("defrag", "env", "want"), [
    ("madvise", None, False), ("defer+madvise", None, False), ("always", None, False),  # synchronous compaction: off
    ("defer", None, True), ("never", None, True), (None, None, True),
    ("madvise", "1", True), ("never", "0", False), ("madvise", "", False),  # the user's setting wins; empty = unset
])
def test_advice_only_off_where_defrag_stalls_unless_the_user_says(defrag, env, want):
    assert numpy_hugepage_advice_wanted(defrag, env) is want


@pytest.mark.parametrize(("text", "want"), [("always defer defer+madvise [madvise] never", False),
                                            ("always [defer] defer+madvise madvise never", True)])
def test_configure_sets_numpys_switch(tmp_path, monkeypatch, restore_numpy_advice, text, want):
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    p = tmp_path / "defrag"
    p.write_text(text)
    multiarray._set_madvise_hugepage(not want)
    assert configure_numpy_hugepages(p) is want
    assert multiarray._get_madvise_hugepage() is want


def test_importing_neurorad_applies_it_and_respects_the_environment():
    probe = ("import numpy as np; before = np._core.multiarray._get_madvise_hugepage(); import neurorad; "
             "print(before, np._core.multiarray._get_madvise_hugepage())")
    base = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    env_on = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                            env={**base, "NUMPY_MADVISE_HUGEPAGE": "1"})
    assert env_on.returncode == 0, env_on.stderr
    assert env_on.stdout.split() == ["True", "True"]  # the user's setting is kept
    expected = numpy_hugepage_advice_wanted(thp_defrag_mode(), None)
    plain = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                           env=base)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.split()[1] == str(expected)


# --- glibc's allocator keeps freed memory (neurorad.runtime.configure_malloc) ---

@pytest.mark.parametrize(("env", "mode"), [(None, "keep"), ("", "keep"), ("keep", "keep"), (" GLIBC ", "glibc")])
def test_malloc_mode_from_the_environment(env, mode):
    assert malloc_mode_wanted(env) == mode


def test_a_wrong_malloc_mode_names_the_variable():
    with pytest.raises(ValueError, match="NEURORAD_MALLOC"):
        malloc_mode_wanted("jemalloc")


# six 64 MB arrays, three from the main thread and three from another, after one warm-up round: with glibc's
# defaults each is a fresh mmap (16,384 page faults of 4 kB each); kept, they reuse the heap
_MALLOC_PROBE = """
import resource, threading
import numpy as np
import neurorad
from neurorad.runtime import configure_malloc, release_free_memory

def work():
    for _ in range(3):
        a = np.ones(16 * 2**20, np.float32)
        del a

def both():
    work()
    t = threading.Thread(target=work)
    t.start()
    t.join()

both()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
both()
f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(configure_malloc(), f1 - f0, release_free_memory())
"""


def _thp_always() -> bool:
    return thp_defrag_mode(Path("/sys/kernel/mm/transparent_hugepage/enabled")) == "always"


def _malloc_probe(mode: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "NEURORAD_MALLOC"}
    env["NUMPY_MADVISE_HUGEPAGE"] = "0"  # 4 kB pages: the fault counts below are per page
    if mode is not None:
        env["NEURORAD_MALLOC"] = mode
    run = subprocess.run([sys.executable, "-c", _MALLOC_PROBE], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    return run.stdout.split()


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_importing_neurorad_keeps_freed_memory_for_the_next_array():
    mode, faults, released = _malloc_probe(None)
    assert mode == "keep"
    assert int(faults) < 3000  # six fresh 64 MB arrays would take about 98,000
    assert released == "True"  # the kept pages go back on request
    mode, faults, _ = _malloc_probe("glibc")
    assert mode == "glibc"
    if not _thp_always():  # with transparent huge pages always on, glibc's fresh maps fault per 2 MB
        assert int(faults) > 50_000
