"""neurorad.runtime: NumPy's huge-page advice is switched off only where the kernel would stall on it."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from neurorad.runtime import configure_numpy_hugepages, numpy_hugepage_advice_wanted, thp_defrag_mode

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
