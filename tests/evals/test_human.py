"""Human ratings: the append-only store survives a torn write, and every statistic matches an
independent computation (scipy, sklearn, or the rule the test's own judge server grades by)."""

from __future__ import annotations

import json
import math
import random
import re

import numpy as np
import pytest
from scipy import optimize, stats

from evals import human, pairwise
from evals.base import EvalContext
from evals.judge import evaluate as judge_evaluate
from tests.evals.judge_server import JudgeServer, ok
from tests.helpers import run_cli, store_grid, write_grid


def test_wilson_matches_scipy():
    for wins, n in [(0, 5), (3, 10), (7, 7), (41, 97)]:
        ci = stats.binomtest(wins, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert pairwise.wilson(wins, n) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_bradley_terry_matches_a_direct_maximum_likelihood_fit():
    rng = random.Random(1)
    cells = ["a", "b", "c", "d"]
    true = {"a": 2.0, "b": 1.0, "c": 0.5, "d": 0.25}
    outcomes = []
    for _ in range(60):
        i, j = rng.sample(cells, 2)
        u = rng.random()
        outcomes.append((i, j, 0.5 if u < 0.15 else float(u < 0.15 + 0.85 * true[i] / (true[i] + true[j]))))
    outcomes.append(("d", "a", 0.0))

    def nll(theta):  # log-strengths; the virtual tie against a reference of strength 1 included
        t = dict(zip(cells, theta))
        out = 0.0
        for c in cells:
            out -= 0.5 * t[c] + 0.5 * 0.0 - math.log(math.exp(t[c]) + 1.0)
        for i, j, s in outcomes:
            out -= s * t[i] + (1 - s) * t[j] - math.log(math.exp(t[i]) + math.exp(t[j]))
        return out

    fit = optimize.minimize(nll, np.zeros(len(cells)), method="BFGS", options={"gtol": 1e-10})
    got = pairwise.bradley_terry(outcomes, cells)
    assert [got[c] for c in cells] == pytest.approx(list(fit.x), abs=1e-5)
    assert sorted(cells, key=lambda c: -got[c])[0] == "a"


def test_cohen_kappa_matches_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(2)
    x = [rng.choice(["a", "b", "tie"]) for _ in range(50)]
    y = [v if rng.random() < 0.6 else rng.choice(["a", "b", "tie"]) for v in x]
    assert pairwise.cohen_kappa(x, y) == pytest.approx(metrics.cohen_kappa_score(x, y))


def test_a_torn_last_line_is_skipped_then_cut_and_earlier_rows_kept(tmp_path):
    path = tmp_path / "ratings" / "alice.jsonl"
    for i in range(3):
        human.append_rating(path, {"pair": f"p{i}", "n": i})
    with open(path, "ab") as f:
        f.write(b'{"pair": "p3", "n"')  # a write killed half-way: no newline
    assert [r["pair"] for r in human.read_ratings(path)] == ["p0", "p1", "p2"]
    human.append_rating(path, {"pair": "p4", "n": 4})
    assert [r["pair"] for r in human.read_ratings(path)] == ["p0", "p1", "p2", "p4"]
    assert path.read_bytes().count(b"\n") == 4 and b'"p3"' not in path.read_bytes()
    path.write_bytes(path.read_bytes() + b"garbage\n")
    with pytest.raises(Exception, match="line 5 is not JSON"):
        human.read_ratings(path)


CONFIG_RE = re.compile(r"by configuration (\d+)")


def by_configuration(body: dict):
    """The test's judge: a story of configuration k gets grammar and plot 3 + 2k, creativity 5."""
    k = int(CONFIG_RE.search(body["messages"][0]["content"]).group(1))
    return ok(grammar=3 + 2 * k, plot=3 + 2 * k, creativity=5, consistency=3 + k)


@pytest.fixture
def rated(tmp_path, monkeypatch):
    """A stored 3 x 2-seed grid, graded by the real judge eval against a local server, and rated by
    two raters who mostly prefer the higher configuration; bob also rates six of alice's pairs."""
    grid_file = write_grid(tmp_path / "h.yaml", name="h", grid={"model.n_embd": [8, 16, 24]}, seeds=(0, 1))
    grid_dir = store_grid(tmp_path / "results", grid_file, judge=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    cells = sorted(p.name for p in grid_dir.iterdir() if p.is_dir())
    with JudgeServer(default=by_configuration) as server:
        for cell in cells:
            ctx = EvalContext(model=None, tokenizer=None, config=None, cell_dir=grid_dir / cell,
                              cache_dir=tmp_path / "results" / "_cache")
            result = judge_evaluate(ctx, {"base_url": server.base_url, "model": "test-judge", "backoff_base": 0})
            assert result.status == "ok"
            (grid_dir / cell / "evals").mkdir()
            (grid_dir / cell / "evals" / "judge.json").write_text(json.dumps(result.to_dict()))
    spec = json.loads((grid_dir / "grid.json").read_text())
    groups = {c["id"]: json.dumps(c["axes"]) for c in spec["cells"]}
    pairs = human.make_pairs({c: grid_dir / c for c in cells}, groups)
    config = {c["id"]: [8, 16, 24].index(c["axes"]["model.n_embd"]) for c in spec["cells"]}
    rng = random.Random(3)
    truth = []  # (rater, pair key, dim, outcome in cell terms), as the test decided it
    alice = human.order_for("alice", pairs)[:20]
    bob = (alice[:6] + [p for p in human.order_for("bob", pairs) if p not in alice[:6]])[:12]
    for rater, chosen in (("alice", alice), ("bob", bob)):
        for pair in chosen:
            left, right = pair.sides(rater)
            choices = {}
            for dim in human.DIMENSIONS:
                better = "left" if config[left.cell] > config[right.cell] else "right"
                u = rng.random()
                choices[dim] = better if u < 0.7 else "tie" if u < 0.8 else {"left": "right", "right": "left"}[better]
                winner = {"left": left.cell, "right": right.cell}.get(choices[dim])
                a = min(left.cell, right.cell)
                truth.append((rater, pair.key, dim, "tie" if winner is None else "a" if winner == a else "b",
                              (left.cell, right.cell)))
            human.append_rating(human.ratings_path(grid_dir, rater), {
                "rater": rater, "pair": pair.key, "prompt": pair.prompt, "choices": choices, "note": "",
                "left": {"cell": left.cell, "sample": left.sample},
                "right": {"cell": right.cell, "sample": right.sample}})
    return grid_dir, config, truth


def test_summary_against_independent_computations(rated):
    metrics = pytest.importorskip("sklearn.metrics")
    grid_dir, config, truth = rated
    report = human.summarize(grid_dir)
    assert report["n_ratings"] == 32 and report["raters"] == ["alice", "bob"]
    grammar = report["dimensions"]["grammar"]
    mine = [t for t in truth if t[2] == "grammar"]
    for cell, s in grammar["cells"].items():
        wins = sum((o == "a" and min(lr) == cell) or (o == "b" and max(lr) == cell) for *_, o, lr in mine)
        losses = sum((o == "b" and min(lr) == cell) or (o == "a" and max(lr) == cell) for *_, o, lr in mine)
        assert (s["wins"], s["losses"]) == (wins, losses)
    # the judge prefers the higher configuration on grammar (3 + 2k), never a tie across configurations
    judge_says = ["a" if config[min(lr)] > config[max(lr)] else "b" for *_, lr in mine]
    assert grammar["judge"]["n"] == len(mine)
    assert grammar["judge"]["kappa"] == pytest.approx(metrics.cohen_kappa_score([t[3] for t in mine], judge_says))
    # creativity is 5 for every story: the judge calls every pair a tie
    assert report["dimensions"]["creativity"]["judge"]["agreement"] == pytest.approx(
        np.mean([t[3] == "tie" for t in truth if t[2] == "creativity"]))
    scores = {c: json.loads((grid_dir / c / "evals" / "judge.json").read_text())["metrics"]["grammar"]
              for c in grammar["cells"]}
    cells = sorted(scores)
    rho = stats.spearmanr([scores[c] for c in cells], [grammar["cells"][c]["bt"] for c in cells]).statistic
    assert grammar["judge"]["spearman"] == pytest.approx(rho) and rho > 0.5
    assert config[grammar["ranking"][0]] == 2  # the raters' favourite configuration ranks first
    both = {k for r, k, *_ in truth if r == "bob"} & {k for r, k, *_ in truth if r == "alice"}
    x = [t[3] for t in truth if t[0] == "alice" and t[1] in both and t[2] == "grammar"]
    y = [t[3] for t in truth if t[0] == "bob" and t[1] in both and t[2] == "grammar"]
    assert grammar["raters"]["n"] == len(x) == len(both) and len(both) > 0
    assert grammar["raters"]["kappa"] == pytest.approx(metrics.cohen_kappa_score(x, y))


def test_the_command_line_prints_the_report(rated):
    grid_dir, _, _ = rated
    proc = run_cli(grid_dir, module="evals.human")
    assert proc.returncode == 0, proc.stderr
    assert "grammar (" in proc.stdout and "Wilson" in proc.stdout and "LLM judge: kappa" in proc.stdout
    missing = run_cli(grid_dir.parent / "nope", module="evals.human")
    assert missing.returncode != 0 and "no ratings yet" in missing.stderr and "Traceback" not in missing.stderr


def test_the_paper_gets_a_human_table(rated, tmp_path):
    from paper.build import build

    grid_dir, _, _ = rated
    made = build([grid_dir], tmp_path / "paper", tables_only=True)
    table = (tmp_path / "paper" / "tables" / "h_human.tex").read_text()
    assert tmp_path / "paper" / "tables" / "h_human.tex" in made["tables"]
    report = human.summarize(grid_dir)["dimensions"]["all"]
    assert table.startswith("% Generated from") and table.count(r" \\") == 1 + len(report["ranking"])
    assert f"$\\kappa$ = {report['judge']['kappa']:.2f}" in table and "Wilson" in table
    assert "input{tables/h_human.tex}" in (tmp_path / "paper" / "generated" / "results.tex").read_text()


WRITER = """
import sys
from evals.human import append_rating
for i in range(100000):
    append_rating(sys.argv[1], {"pair": f"p{i}", "note": "x" * 300})
    print(i, flush=True)
"""


def test_a_writer_killed_while_appending_loses_no_acknowledged_row(tmp_path):
    """SIGKILL a process appending ratings as fast as it can: every row it had reported written is
    read back, in order, and the file takes the next append."""
    import signal
    import subprocess
    import sys

    from tests.helpers import REPO

    path = tmp_path / "ratings" / "r.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    acknowledged = -1
    for line in proc.stdout:
        acknowledged = int(line)
        if acknowledged >= 40:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rows = human.read_ratings(path)
    assert len(rows) > acknowledged and [r["pair"] for r in rows] == [f"p{i}" for i in range(len(rows))]
    human.append_rating(path, {"pair": "after"})
    assert [r["pair"] for r in human.read_ratings(path)][-2:] == [rows[-1]["pair"], "after"]
