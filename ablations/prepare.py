"""`python -m ablations.prepare GRID.yaml`: build every distinct token cache of a grid, before training.

    python -m ablations.prepare ablations/grids/tinystories_15m.yaml --set data.path=/data/TinyStories
    python -m ablations.prepare grid.yaml --launcher slurm --wait   # one CPU job with the grid's resources

Each distinct (data, tokenizer) config is read, cleaned, tokenized and stored once, with a progress
bar per stage (MB, MB/s, ETA), then a table: tokens per split, bytes per token, the build's peak
memory and wall time (as recorded in the cache's meta.json, so a cache built earlier shows its
own build). Training cells then open the cache; a cell trained by a SLURM job never tokenizes
(it stops with a message naming this command when its cache is missing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ablations import records
from research.errors import UserError, run_main


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m ablations.prepare", description=__doc__.splitlines()[0])
    p.add_argument("grid", type=Path, help="grid YAML file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key for every cell, e.g. --set data.path=corpus.txt (repeatable)")
    p.add_argument("--results-dir", type=Path, default=None,
                   help="where grids (and the token cache, <results>/_cache) are stored (default: $ABLATIONS_RESULTS "
                        "or ./results)")
    p.add_argument("--launcher", choices=["local", "slurm"], default="local",
                   help="local: build here; slurm: one CPU job using the grid's resources (gpus dropped)")
    p.add_argument("--wait", action="store_true", help="slurm: wait for the job and print its table")
    p.add_argument("--slurm-cluster", choices=["slurm", "local", "debug"], default="slurm", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def prepare_grid(grid, cache_root: Path, progress: bool = True) -> list[dict]:
    """Build (or find) each dataset's cache; one row per dataset for the table."""
    from research.data.tokens import cache_key, prepare_tokens

    rows = []
    for data, tok in grid.datasets():
        fresh = not (Path(cache_root) / "tokens" / cache_key(data, tok) / "meta.json").exists()
        tokens = prepare_tokens(data, tok, cache_root, progress=progress)
        meta, build = tokens.meta, tokens.meta.get("build", {})
        rows.append({
            "data": data.path or data.source, "tokenizer": tok.kind + (f" {tok.vocab_size}" if tok.vocab_size else ""),
            "splits": {s: v["tokens"] for s, v in meta["splits"].items()},
            "bytes_per_token": tokens.bytes_per_token("train"),
            "peak_rss_mb": build.get("peak_rss_mb"), "wall_s": build.get("wall_s"),
            "status": "built" if fresh else "cached", "path": str(tokens.path),
        })
    return rows


def format_rows(rows: list[dict]) -> str:
    head = f"{'data':<40} {'tokenizer':<10} {'train':>13} {'val':>11} {'test':>11} {'B/tok':>6} " \
           f"{'RSS MB':>7} {'wall s':>7}  status"
    lines = [head, "-" * len(head)]
    for r in rows:
        sp = r["splits"]
        cell = [f"{sp[s]:,}" if s in sp else "-" for s in ("train", "val", "test")]
        name = r["data"] if len(r["data"]) <= 40 else "..." + r["data"][-37:]
        rss = f"{r['peak_rss_mb']:.0f}" if r["peak_rss_mb"] is not None else "-"
        wall = f"{r['wall_s']:.1f}" if r["wall_s"] is not None else "-"
        lines.append(f"{name:<40} {r['tokenizer']:<10} {cell[0]:>13} {cell[1]:>11} {cell[2]:>11} "
                     f"{r['bytes_per_token']:>6.2f} {rss:>7} {wall:>7}  {r['status']}")
    lines.append("(tokens per split; B/tok: UTF-8 bytes per training token; RSS and wall: the build's peak "
                 "resident memory and time, from meta.json)")
    return "\n".join(lines)


class PrepareJob:
    """The SLURM job: the same `prepare_grid`, on a CPU node (picklable: paths and strings)."""

    def __init__(self, grid_path: str, overrides: dict, results_dir: str):
        self.grid_path, self.overrides, self.results_dir = grid_path, overrides, results_dir

    def __call__(self) -> str:
        from ablations.grid import load_grid

        grid = load_grid(Path(self.grid_path), self.overrides)
        table = format_rows(prepare_grid(grid, Path(self.results_dir) / "_cache", progress=True))
        print(table, flush=True)
        return table


def submit(grid, grid_path: Path, overrides: dict, root: Path, cluster: str):
    try:
        import submitit
    except ImportError:
        raise UserError("--launcher slurm needs the package 'submitit': pip install submitit") from None
    import shlex

    from ablations.launchers import slurm_parameters, snapshot

    params = slurm_parameters(grid.resources)
    params.pop("gpus_per_node", None)  # tokenizing needs CPUs only
    params.pop("slurm_array_parallelism", None)
    grid_dir = root / grid.name
    code, grid_copy = snapshot(grid_path, grid_dir)
    setup = [f"export PYTHONPATH={shlex.quote(str(code))}${{PYTHONPATH:+:$PYTHONPATH}}",
             *params.pop("slurm_setup", [])]
    kwargs = {"slurm_python": f"{shlex.quote(sys.executable)} -P"} if cluster == "slurm" else {}
    executor = submitit.AutoExecutor(folder=str(records.submitit_dir(grid_dir) / "prepare-%j"), cluster=cluster,
                                     **kwargs)
    executor.update_parameters(name=f"prepare-{grid.name}", nodes=1, tasks_per_node=1, slurm_setup=setup, **params)
    return executor.submit(PrepareJob(str(grid_copy), overrides, str(root.resolve())))


def main(argv=None) -> int:
    from ablations.grid import load_grid
    from ablations.runner import results_root, say
    from research.config import parse_overrides

    args = parse_args(argv)
    overrides = parse_overrides(args.set)
    grid = load_grid(args.grid, overrides)
    root = results_root(args.results_dir)
    if args.launcher == "slurm":
        job = submit(grid, args.grid.resolve(), overrides, root, args.slurm_cluster)
        say(f"submitted the data preparation of '{grid.name}' as job {job.job_id}, log {job.paths.stderr}")
        if not args.wait:
            return 0
        try:
            print(job.result())
        except Exception as e:  # noqa: BLE001 - the job's own error is the story
            say(f"job {job.job_id} failed: {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}")
            return 1
        return 0
    print(format_rows(prepare_grid(grid, root / "_cache")))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
