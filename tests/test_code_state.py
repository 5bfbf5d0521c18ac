"""A dirty tree's change is kept in the cell, and `git apply` on the commit gives back the tree."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest

from ablations.code_state import MAX_UNTRACKED_BYTES, git_state
from research.cell import CODE_DIFF as DIFF_FILE

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")


def git(cwd, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout


def test_dirty_tree_diff_reproduces_the_code(tmp_path):
    repo, cell, clone = tmp_path / "repo", tmp_path / "cell", tmp_path / "clone"
    repo.mkdir()
    cell.mkdir()
    git(repo, "init", "-q")
    (repo / "model.py").write_text("width = 32\n")
    (repo / "weights.bin").write_bytes(bytes(range(256)))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    clean = git_state(cell, root=repo)
    assert clean == {"commit": git(repo, "rev-parse", "HEAD").strip(), "dirty": False}
    assert not (cell / DIFF_FILE).exists()

    (repo / "model.py").write_text("width = 64  # the change that produced the numbers\n")
    (repo / "weights.bin").write_bytes(bytes(reversed(range(256))))
    (repo / "variant.py").write_text("new = True\n")  # untracked, not ignored: part of the code
    (repo / "data.txt").write_text("x" * (MAX_UNTRACKED_BYTES + 1))  # untracked but too big: named only
    state = git_state(cell, root=repo)
    diff = (cell / DIFF_FILE).read_bytes()
    assert state["dirty"] is True and state["commit"] == clean["commit"] and state["diff"] == DIFF_FILE
    assert state["diff_sha256"] == hashlib.sha256(diff).hexdigest() and state["untracked_left_out"] == ["data.txt"]

    git(tmp_path, "clone", "-q", str(repo), str(clone))
    git(clone, "checkout", "-q", state["commit"])
    git(clone, "apply", str(cell / DIFF_FILE))
    for name in ("model.py", "weights.bin", "variant.py"):
        assert (clone / name).read_bytes() == (repo / name).read_bytes(), name
    assert not (clone / "data.txt").exists()


def test_outside_a_checkout_nothing_is_claimed(tmp_path):
    assert git_state(tmp_path, root=tmp_path) == {"commit": None, "dirty": None}
