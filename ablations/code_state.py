"""The code a cell ran: the git commit and, when the working tree is dirty, the change itself.

A `dirty: true` flag alone cannot be undone: nobody can say later which edit produced a number. So
a dirty tree's change is written into the cell as `code.diff` (tracked files against HEAD, plus
untracked files that git does not ignore), which `git apply code.diff` on a checkout of the
commit turns back into the tree that trained the cell. Its sha256 goes to the manifest, so the
paper can tell two dirty cells of one commit apart.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from research import cell

MAX_UNTRACKED_BYTES = 1_000_000  # an untracked file larger than this is data, not code: named, not copied


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, timeout=30)


def working_tree_diff(root: Path) -> tuple[bytes, list[str]]:
    """(binary diff of the tree against HEAD including untracked files, untracked files left out)."""
    diff = _git(root, "diff", "HEAD", "--binary", "--no-color", "--no-ext-diff").stdout
    untracked = [p for p in _git(root, "ls-files", "--others", "--exclude-standard", "-z").stdout.decode().split("\0")
                 if p]
    left_out = []
    for rel in sorted(untracked):
        if (root / rel).is_file() and (root / rel).stat().st_size > MAX_UNTRACKED_BYTES:
            left_out.append(rel)
            continue
        # --no-index exits 1 when the files differ, which they always do against /dev/null
        diff += _git(root, "diff", "--no-index", "--binary", "--no-color", "--", "/dev/null", rel).stdout
    return diff, left_out


def git_state(cell_dir: Path | None = None, root: Path | None = None) -> dict:
    """{"commit", "dirty"} and, for a dirty tree, {"diff": <its file in the cell>, "diff_sha256",
    "untracked_left_out"}, the diff written into `cell_dir` (research.cell). Outside a git checkout
    every field is None."""
    root = Path(root) if root else Path(__file__).resolve().parents[1]
    try:
        head = _git(root, "rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        state = {"commit": head.stdout.decode().strip(),
                 "dirty": _git(root, "status", "--porcelain").stdout.strip() != b""}
        if state["dirty"] and cell_dir is not None:
            diff, left_out = working_tree_diff(root)
            name = cell.write_code_diff(cell_dir, diff)
            state.update({"diff": name, "diff_sha256": hashlib.sha256(diff).hexdigest(),
                          "untracked_left_out": left_out})
        return state
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
