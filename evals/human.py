"""Human evaluation: blind pairwise ratings of stored stories, and what they say about the cells.

    python -m evals.human results/GRID [--judge-cache results/_cache/judge] [--json out.json]

A *pair* is two stories from the same prompt and sample index, written by two cells (read from each
cell's `samples/generation.jsonl`, else `samples/samples.jsonl`, the files the LLM judge grades).
A rater sees the two without cell names, left and right in an order seeded by the rater's name, and
picks `left`, `right` or `tie` on each of the judge's dimensions (grammar, creativity, consistency,
plot), with an optional note.

Ratings live under the grid, `ratings/<rater>.jsonl`, one JSON object per line, append-only. Each
rating is one `write` of one line on a file opened with O_APPEND, then fsync'd, so a crash leaves
at worst a torn last line without its newline; readers skip it, and the next append cuts it off
first. Rows before it are never touched.

Aggregates (per dimension, and `all` pooling the four):
- win rate of each cell: wins / (wins + losses), ties reported apart, with a 95% Wilson interval
  (Wilson 1927, "Probable inference, the law of succession, and statistical inference");
- Bradley-Terry strengths (Bradley & Terry 1952), fitted by Hunter's (2004) MM iteration, a tie
  counting half a win to each side; each cell also plays one virtual tie against a reference of
  strength 1, a pseudo-count that keeps strengths finite when a cell lost every comparison.
  Reported as log-strengths (0 = the reference; +0.69 = twice the odds);
- agreement with the LLM judge on the same pairs: the judge prefers the story it scored higher
  on that dimension (tie when equal); Cohen's kappa (1960) between human and judge preference,
  over every rated (pair, dimension); and Spearman's rho between each cell's mean judge score
  (evals/judge.json) and its Bradley-Terry strength;
- agreement between raters who rated the same pair: share of equal choices and Cohen's kappa
  over every two raters of a pair and dimension.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from evals import judge
from evals.pairwise import bradley_terry, cohen_kappa, wilson
from research.cell import eval_path
from research.errors import DataError, UserError

DIMENSIONS = judge.SCORES  # grammar, creativity, consistency, plot
CHOICES = ("left", "right", "tie")
RATINGS = "ratings"
_append_lock = threading.Lock()


@dataclass(frozen=True)
class Side:
    cell: str
    sample: int
    story: judge.Story  # beginning as the cell decoded it, and the completion


@dataclass(frozen=True)
class Pair:
    key: str  # stable and opaque: hides the cells from the page
    prompt: str
    a: Side  # cells in name order; the rater's left/right is drawn from `sides`
    b: Side

    def sides(self, rater: str) -> tuple[Side, Side]:
        """(left, right) for this rater: a coin seeded by the rater and the pair."""
        flip = random.Random(f"{rater}\0{self.key}").random() < 0.5
        return (self.b, self.a) if flip else (self.a, self.b)


# stories and pairs -------------------------------------------------------------------------------
def read_cell_stories(cell_dir: Path) -> dict[tuple[str, int], judge.Story]:
    """(prompt, sample index) -> story, from the file the judge grades; {} when the cell has none."""
    try:
        path, stories = judge.read_stories(cell_dir)
    except DataError:
        return {}
    prompts = [json.loads(line).get("prompt") or "" for line in path.read_text(encoding="utf-8").splitlines()
               if line.strip()]
    seen: dict[str, int] = defaultdict(int)
    out = {}
    for prompt, story in zip(prompts, stories):
        out[(prompt, seen[prompt])] = story
        seen[prompt] += 1
    return out


def pair_key(a: str, b: str, prompt: str, sample: int) -> str:
    return hashlib.sha256(json.dumps([a, b, prompt, sample]).encode()).hexdigest()[:20]


def make_pairs(cell_dirs: dict[str, Path], groups: dict[str, str] | None = None) -> list[Pair]:
    """Every pair of cells (of different groups, when `groups` maps cell -> configuration, so seeds of
    one configuration are not compared) on every prompt and sample index both stored."""
    stories = {cell: read_cell_stories(path) for cell, path in sorted(cell_dirs.items())}
    cells = [c for c in stories if stories[c]]
    pairs = []
    for i, a in enumerate(cells):
        for b in cells[i + 1:]:
            if groups is not None and groups.get(a) == groups.get(b):
                continue
            for prompt, sample in sorted(set(stories[a]) & set(stories[b])):
                pairs.append(Pair(pair_key(a, b, prompt, sample), prompt, Side(a, sample, stories[a][(prompt, sample)]),
                                  Side(b, sample, stories[b][(prompt, sample)])))
    return pairs


def order_for(rater: str, pairs: list[Pair]) -> list[Pair]:
    """The rater's order of the pairs: a hash of rater and pair, so it is the same on every visit
    and adding cells does not reshuffle the pairs not yet seen."""
    return sorted(pairs, key=lambda p: hashlib.sha256(f"{rater}\0{p.key}".encode()).hexdigest())


# the ratings files -------------------------------------------------------------------------------
def ratings_path(grid_dir: Path, rater: str) -> Path:
    return Path(grid_dir) / RATINGS / f"{rater}.jsonl"


def read_ratings(path: Path) -> list[dict]:
    """The complete rows of one rater's file; a torn last line (no newline: the writer was killed
    mid-write) is skipped. A complete row that is not JSON is a corrupted file, reported."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    rows = []
    for i, line in enumerate(data.split(b"\n")[:-1]):  # the part after the last newline is torn or empty
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            raise DataError(f"{path}: line {i + 1} is not JSON; the file was edited by hand? fix or remove "
                            "that line") from None
    return rows


def append_rating(path: Path, row: dict) -> None:
    """Append one row durably: cut a torn tail, then one write of the whole line and fsync."""
    path = Path(path)
    line = (json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n").encode()
    with _append_lock:
        new = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size:
                tail = os.pread(fd, min(size, 1 << 16), max(0, size - (1 << 16)))
                if not tail.endswith(b"\n"):  # a torn last line: drop it, keep every complete row
                    cut = tail.rfind(b"\n")
                    os.ftruncate(fd, size - len(tail) + cut + 1 if cut >= 0 else 0)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def all_ratings(grid_dir: Path) -> list[dict]:
    """Every rater's complete rows, rater files in name order."""
    return [row for path in sorted((Path(grid_dir) / RATINGS).glob("*.jsonl")) for row in read_ratings(path)]


# aggregation -------------------------------------------------------------------------------------
def outcome(row: dict, dim: str) -> tuple[str, str, str] | None:
    """(cell a, cell b, 'a' | 'b' | 'tie') with a < b by name: a rating in cell terms."""
    choice = row.get("choices", {}).get(dim)
    if choice not in CHOICES:
        return None
    left, right = row["left"]["cell"], row["right"]["cell"]
    winner = {"left": left, "right": right}.get(choice)
    a, b = sorted((left, right))
    return a, b, "tie" if winner is None else ("a" if winner == a else "b")


def judge_preference(pair_row: dict, dim: str, grades: dict) -> str | None:
    """The judge's choice on a rated pair, in cell terms, or None when a story is not graded."""
    left, right = grades.get(_story_id(pair_row, "left")), grades.get(_story_id(pair_row, "right"))
    if left is None or right is None:
        return None
    sl, sr = getattr(left, dim), getattr(right, dim)
    winner = None if sl == sr else (pair_row["left"]["cell"] if sl > sr else pair_row["right"]["cell"])
    a = min(pair_row["left"]["cell"], pair_row["right"]["cell"])
    return "tie" if winner is None else ("a" if winner == a else "b")


def _story_id(row: dict, side: str) -> tuple[str, str, int]:
    return row[side]["cell"], row.get("prompt", ""), int(row[side]["sample"])


def judge_grades(grid_dir: Path, rows: list[dict], cache: Path) -> dict:
    """(cell, prompt, sample) -> the judge's cached Grade of that story, for the rated stories of
    cells whose evals/judge.json names the judge model and temperature."""
    grades = {}
    template = judge.prompt_template()
    for cell in sorted({r[s]["cell"] for r in rows for s in ("left", "right")}):
        try:
            details = json.loads(eval_path(Path(grid_dir) / cell, "judge").read_text()).get("details", {})
        except (OSError, ValueError):
            continue
        opts = judge.JudgeOptions(model=details.get("judge_model", ""), temperature=details.get("temperature", 0.0))
        for (prompt, sample), story in read_cell_stories(Path(grid_dir) / cell).items():
            path = judge.grade_path(cache, opts, judge.judge_message(template, story))
            grade = judge.load_cached(path) if path.exists() else None
            if grade is not None:
                grades[(cell, prompt, sample)] = grade
    return grades


def judge_scores(grid_dir: Path, cells: list[str]) -> dict[str, dict[str, float]]:
    """cell -> the judge's mean score per dimension (and `all`, their mean) from evals/judge.json."""
    out = {}
    for cell in cells:
        try:
            doc = json.loads(eval_path(Path(grid_dir) / cell, "judge").read_text())
        except (OSError, ValueError):
            continue
        metrics = doc.get("metrics") or {}
        if all(isinstance(metrics.get(d), (int, float)) for d in DIMENSIONS):
            out[cell] = {d: float(metrics[d]) for d in DIMENSIONS}
            out[cell]["all"] = sum(out[cell][d] for d in DIMENSIONS) / len(DIMENSIONS)
    return out


def summarize(grid_dir: Path, judge_cache: Path | None = None) -> dict:
    """Every aggregate of the module docstring, as plain data (see `format_report`)."""
    from scipy import stats

    grid_dir = Path(grid_dir)
    rows = all_ratings(grid_dir)
    cells = sorted({r[s]["cell"] for r in rows for s in ("left", "right")})
    cache = Path(judge_cache) if judge_cache is not None else grid_dir.parent / "_cache" / judge.NAME
    grades = judge_grades(grid_dir, rows, cache) if rows else {}
    scores = judge_scores(grid_dir, cells)
    report = {"grid": grid_dir.name, "n_ratings": len(rows), "raters": sorted({r["rater"] for r in rows}),
              "cells": cells, "dimensions": {}}
    for dim in (*DIMENSIONS, "all"):
        dims = DIMENSIONS if dim == "all" else (dim,)
        items = [(r, d, o) for r in rows for d in dims if (o := outcome(r, d)) is not None]
        tally = {c: {"wins": 0, "losses": 0, "ties": 0} for c in cells}
        bt_input = []
        for _, _, (a, b, res) in items:
            tally[a]["wins" if res == "a" else "losses" if res == "b" else "ties"] += 1
            tally[b]["wins" if res == "b" else "losses" if res == "a" else "ties"] += 1
            bt_input.append((a, b, {"a": 1.0, "b": 0.0, "tie": 0.5}[res]))
        strengths = bradley_terry(bt_input, cells)
        per_cell = {}
        for c in cells:
            t = tally[c]
            n = t["wins"] + t["losses"]
            lo, hi = wilson(t["wins"], n)
            per_cell[c] = {**t, "win_rate": t["wins"] / n if n else math.nan, "ci_low": lo, "ci_high": hi,
                           "bt": strengths[c]}
        human, machine = [], []
        for r, d, (_, _, res) in items:
            pref = judge_preference(r, d, grades)
            if pref is not None:
                human.append(res)
                machine.append(pref)
        judged = [c for c in cells if c in scores]
        xs, ys = [scores[c][dim] for c in judged], [strengths[c] for c in judged]
        varied = len(judged) >= 3 and len(set(xs)) > 1 and len(set(ys)) > 1  # else rho is undefined
        rho = float(stats.spearmanr(xs, ys).statistic) if varied else math.nan
        report["dimensions"][dim] = {
            "cells": per_cell, "ranking": sorted(cells, key=lambda c: -strengths[c]), "n": len(items),
            "judge": {"n": len(human), "kappa": cohen_kappa(human, machine),
                      "agreement": sum(h == m for h, m in zip(human, machine)) / len(human) if human else math.nan,
                      "spearman": rho, "n_cells": len(judged)},
            "raters": inter_rater(rows, dims)}
    return report


def inter_rater(rows: list[dict], dims: tuple[str, ...]) -> dict:
    """Share of equal choices and Cohen's kappa over every two raters of the same pair and dimension."""
    by_pair: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        by_pair[r["pair"]][r["rater"]] = r
    x, y = [], []
    for raters in by_pair.values():
        names = sorted(raters)
        for i, first in enumerate(names):
            for second in names[i + 1:]:
                for d in dims:
                    o1, o2 = outcome(raters[first], d), outcome(raters[second], d)
                    if o1 is not None and o2 is not None:
                        x.append(o1[2])
                        y.append(o2[2])
    return {"n": len(x), "agreement": sum(a == b for a, b in zip(x, y)) / len(x) if x else math.nan,
            "kappa": cohen_kappa(x, y)}


def _num(v: float, fmt: str = ".2f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def format_report(report: dict) -> str:
    lines = [f"grid {report['grid']}: {report['n_ratings']} ratings by {len(report['raters'])} rater(s)"]
    for dim, d in report["dimensions"].items():
        j, r = d["judge"], d["raters"]
        lines += ["", f"{dim} ({d['n']} comparisons): win rate = wins/(wins+losses), 95% Wilson interval; "
                      "BT = Bradley-Terry log-strength",
                  f"  {'cell':<48} {'wins':>5} {'losses':>6} {'ties':>5} {'win rate':>9} {'95% CI':>13} {'BT':>6}"]
        for c in d["ranking"]:
            s = d["cells"][c]
            ci = f"{_num(s['ci_low'])}-{_num(s['ci_high'])}"
            lines.append(f"  {c[:48]:<48} {s['wins']:>5} {s['losses']:>6} {s['ties']:>5} {_num(s['win_rate']):>9} "
                         f"{ci:>13} {_num(s['bt']):>6}")
        lines.append(f"  LLM judge: kappa {_num(j['kappa'])} over {j['n']} judged comparisons (agreement "
                     f"{_num(j['agreement'])}); Spearman rho {_num(j['spearman'])} over {j['n_cells']} cells")
        lines.append(f"  raters: kappa {_num(r['kappa'])} over {r['n']} doubly rated comparisons "
                     f"(agreement {_num(r['agreement'])})")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.human", description=__doc__.splitlines()[0])
    p.add_argument("grid", type=Path, help="the grid's results folder (results/GRID)")
    p.add_argument("--judge-cache", type=Path, default=None,
                   help="the LLM judge's grade cache (default: the results folder's _cache/judge)")
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    args = p.parse_args(argv)
    if not (args.grid / RATINGS).is_dir():
        raise UserError(f"{args.grid / RATINGS}: no ratings yet; rate stories on the app's Rate page "
                        f"(python -m app, then /rate)")
    report = summarize(args.grid, args.judge_cache)
    print(format_report(report))
    if args.json is not None:
        from research.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    from research.errors import run_main

    raise SystemExit(run_main(main))
