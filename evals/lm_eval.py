"""Any lm-evaluation-harness task on any cell: the cell as an lm-eval `LM`, and an eval entry.

    python -m evals.lm_eval results/demo/<cell> --tasks hellaswag,arc_easy
    python -m evals.lm_eval results/demo/<cell> --tasks hellaswag --data hellaswag=hellaswag.jsonl.gz --limit 500
    python -m evals.lm_eval results/demo/<cell> --tasks my_task --include-path my_tasks/

or, in a grid, `eval.tasks: [lm_eval]` with `eval.options.lm_eval.tasks: [hellaswag, arc_easy]`.
The result is `<cell>/evals/lm_eval.json` like every other eval (one run holds all its tasks; a
later run replaces it): metrics `<task>/<metric>` (lm-eval's filter suffix `,none` dropped, any
other filter kept as `<task>/<metric>,<filter>`), their standard errors, and in `details` the
lm-eval version, each task's version and number of items scored.

`CellLM` wraps any registered architecture, recurrent ones included, since it only calls the
model's `forward` (token ids -> logits) through evals.scoring:

- `loglikelihood`: lm-eval's own `TemplateLM` splits each (context, continuation) into tokens
  (an empty context becomes the end-of-text token), then `score_token_pairs` scores them with the
  context truncated from the left to the model's `block_size`, as lm-eval's HF model does;
- `loglikelihood_rolling`: lm-eval's own disjoint rolling windows (`get_rolling_token_windows`,
  one token of context, windows of `block_size`; one window for models without a limit);
- `generate_until`: greedy decoding (sampling when the task asks for `do_sample`), stopped at the
  first `until` string or end-of-text, at most `max_gen_toks` tokens.

Offline, a task reads a local copy: `data: {task: file}` (`--data task=file`) points the task's
evaluation split(s) at a JSON Lines file (`dataset_path: json` with `data_files`), `task:split`
names one split; a split with no file is left out (few-shot examples then come from the
evaluation split, as lm-eval does for a task without a training split). `include_path` adds a
folder of the user's own task YAMLs (lm-eval's mechanism).
`limit` scores a seeded random sample of N items per task (lm-eval's own `--limit` takes the
first N). lm-eval is an optional extra: `pip install -e '.[lm_eval]'`.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from evals.base import EvalContext, EvalResult, cell_context, run_isolated
from evals.scoring import score_token_pairs, seeded_subset
from research.checks import ranged
from research.config import build
from research.errors import ConfigError, DataError, UserError, run_main

log = logging.getLogger(__name__)

NAME = "lm_eval"
VERSION = 1
#: the lm-eval release this adapter was written and tested against
TESTED_LM_EVAL = "0.4.13"


@dataclass
class LmEvalOptions:
    tasks: list[str] = field(default_factory=list)  # lm-eval task or group names
    data: dict[str, str] = field(default_factory=dict)  # task (or task:split) -> local JSON Lines file
    include_path: str | None = None  # folder of extra task YAMLs
    limit: int | None = ranged(None, ge=1)  # seeded random sample of N items per task
    seed: int = 0
    num_fewshot: int | None = ranged(None, ge=0)  # None = each task's default
    batch_size: int = ranged(32, ge=1)
    max_gen_toks: int = ranged(256, ge=1)  # generation length cap when the task sets none


OPTIONS = LmEvalOptions  # the eval's `eval.options.lm_eval` keys, checked when the grid loads


def require_lm_eval():
    try:
        import lm_eval
    except ImportError:
        raise UserError("lm_eval is not installed; install the extra: pip install -e '.[lm_eval]'") from None
    return lm_eval


def cell_lm_class():
    """`CellLM`, built on first use so that importing this module does not need lm-eval."""
    require_lm_eval()
    from lm_eval.api.model import TemplateLM
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    class CellLM(TemplateLM):
        """A cell's model and tokenizer as an lm-eval language model (see the module docstring)."""

        def __init__(self, model, tokenizer, device: str = "cpu", batch_size: int = 32, max_gen_toks: int = 256,
                     seed: int = 0):
            super().__init__()
            self.model = model.eval()
            self.tok = tokenizer
            self.device_name = device
            self.batch_size = batch_size
            self.max_gen_toks = max_gen_toks
            self.generator = torch.Generator().manual_seed(seed)

        @property
        def eot_token_id(self) -> int:
            return self.tok.eot_id

        @property
        def max_length(self) -> int | None:
            return self.model.block_size

        def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
            return list(self.tok.encode(string))

        def tok_decode(self, tokens, **kwargs) -> str:
            return self.tok.decode(tokens)

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
            scores = score_token_pairs(self.model, [(ctx, cont) for _, ctx, cont in requests], self.batch_size,
                                       self.device_name)
            return [(s.logprob, s.greedy) for s in scores]

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
            pairs, owner = [], []
            for i, (text,) in enumerate(req.args for req in requests):
                ids = self.tok_encode(text)
                window = self.max_length or len(ids) + 1
                for ctx, cont in map(make_disjoint_window,
                                     get_rolling_token_windows(ids, self.eot_token_id, window, context_len=1)):
                    pairs.append((ctx, cont))
                    owner.append(i)
            totals = [0.0] * len(requests)
            for i, s in zip(owner, score_token_pairs(self.model, pairs, self.batch_size, self.device_name)):
                totals[i] += s.logprob
            return totals

        @torch.no_grad()
        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            return [self.generate_one(ctx, dict(kwargs or {})) for ctx, kwargs in (req.args for req in requests)]

        def generate_one(self, context: str, kwargs: dict) -> str:
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.get("max_gen_toks", self.max_gen_toks))
            temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0
            ids = self.tok_encode(context) or [self.eot_token_id]
            out: list[int] = []
            for _ in range(max_new):
                window = ids[-self.max_length:] if self.max_length else ids
                logits = self.model(torch.tensor([window], device=self.device_name))[0, -1].float().cpu()
                if temperature > 0:
                    nxt = int(torch.multinomial((logits / temperature).softmax(-1), 1, generator=self.generator))
                else:
                    nxt = int(logits.argmax())
                if nxt == self.eot_token_id:
                    break
                ids.append(nxt)
                out.append(nxt)
                if any(stop in self.tok_decode(out) for stop in until):
                    break
            text = self.tok_decode(out)
            for stop in until:
                text = text.split(stop)[0] if stop else text
            return text

    return CellLM


def local_files(opts: LmEvalOptions) -> dict[str, dict[str, str]]:
    """task -> {split ("" = its evaluation split(s)) -> absolute path}, checked to exist."""
    if not opts.tasks:
        raise ConfigError(f"eval.options.{NAME}.tasks: empty; name lm-eval tasks, e.g. [hellaswag, arc_easy]")
    files: dict[str, dict[str, str]] = {}
    for key, path in opts.data.items():
        task, _, split = key.partition(":")
        if task not in opts.tasks:
            raise ConfigError(f"eval.options.{NAME}.data.{key}: {task} is not in tasks ({', '.join(opts.tasks)})")
        if not Path(path).expanduser().exists():
            raise DataError(f"eval.options.{NAME}.data.{key}: {path} does not exist")
        files.setdefault(task, {})[split] = str(Path(path).expanduser().resolve())
    return files


@functools.lru_cache(maxsize=8)
def indexed_tasks(paths: tuple[str, ...], include_defaults: bool):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(paths) or None, include_defaults=include_defaults)


def task_manager(opts: LmEvalOptions):
    """lm-eval's TaskManager, indexing only the built-in task folders the names point at when it can.

    Indexing all of lm-eval's ~14,000 task YAMLs takes half a minute or more; a task's folder is
    almost always its name or a prefix of it (`arc_easy` in `arc/`, `blimp_passive_1` in `blimp/`),
    so those folders (and `include_path`) are indexed first, and everything only when a name is not
    found there. Either way the task is built from the same YAML file.
    """
    from lm_eval import tasks as lm_tasks

    root = Path(lm_tasks.__file__).parent
    own = (str(Path(opts.include_path).expanduser()),) if opts.include_path else ()
    folders = set()
    for name in opts.tasks:
        parts = name.split("_")
        folders.update(root / "_".join(parts[:k]) for k in range(1, len(parts) + 1))
    narrow = indexed_tasks(tuple(sorted(str(f) for f in folders if f.is_dir())) + own, False)
    if all(name in narrow.task_index for name in opts.tasks):
        return narrow
    return indexed_tasks(own, True)


def task_specs(opts: LmEvalOptions, manager) -> list:
    """Task names, or full configs with `dataset_path: json` + `data_files` where `data` names a file."""
    from lm_eval.tasks._yaml_loader import load_yaml

    files = local_files(opts)
    specs = []
    for task in opts.tasks:
        entry = manager.task_index.get(task)
        if entry is None:
            from research.errors import did_you_mean

            raise ConfigError(f"eval.options.{NAME}.tasks: unknown lm-eval task '{task}'"
                              f"{did_you_mean(task, manager.all_tasks)}")
        if task not in files:
            specs.append(task)
            continue
        if entry.yaml_path is None:
            raise ConfigError(f"eval.options.{NAME}.data.{task}: {task} is a group or a Python task; "
                              "give a file for each of its tasks")
        cfg = load_yaml(entry.yaml_path, resolve_func=True)
        splits = {}
        for split, path in files[task].items():
            names = [split] if split else [cfg[k] for k in ("test_split", "validation_split") if cfg.get(k)]
            splits.update({name: path for name in names})
        kwargs = dict(cfg.get("dataset_kwargs") or {}, data_files=splits)
        spec = {**cfg, "dataset_path": "json", "dataset_name": None, "dataset_kwargs": kwargs}
        for key in ("training_split", "validation_split", "test_split", "fewshot_split"):
            if spec.get(key) and spec[key] not in splits:
                spec[key] = None  # a split with no local file is left out
        specs.append(spec)
    return specs


def leaf_tasks(task_dict) -> dict:
    """Task name -> Task over a (possibly nested, for groups) dict from `get_task_dict`."""
    out = {}
    for key, value in task_dict.items():
        if isinstance(value, dict):
            out.update(leaf_tasks(value))
        else:
            out[getattr(key, "task_name", None) or str(key)] = value
    return out


def run_tasks(model, tokenizer, opts: LmEvalOptions, device: str = "cpu", log_samples: bool = False) -> dict:
    """lm-eval's `simple_evaluate` on the cell: its raw results dict (results, versions, n-samples).

    log_samples=True keeps lm-eval's per-item records (`samples`: doc, responses, metrics).
    """
    lm_eval = require_lm_eval()
    from lm_eval.tasks import get_task_dict

    local_files(opts)  # checked before the (slow) task index is built
    manager = task_manager(opts)
    specs = task_specs(opts, manager)
    try:
        loaded = leaf_tasks(get_task_dict(specs, manager))
    except Exception as e:  # offline, hub errors, missing files: fixed by a local copy
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise DataError(f"{NAME}: could not load the tasks' data ({reason}); give a local copy with "
                        f"eval.options.{NAME}.data.<task>=<file.jsonl> (--data task=file)") from None
    samples = None
    if opts.limit is not None:
        samples = {name: seeded_subset(len(task.eval_docs), opts.limit, opts.seed) for name, task in loaded.items()}
    lm = cell_lm_class()(model, tokenizer, device, opts.batch_size, opts.max_gen_toks, opts.seed)
    return lm_eval.simple_evaluate(model=lm, tasks=specs, task_manager=manager, num_fewshot=opts.num_fewshot,
                                   samples=samples, log_samples=log_samples, random_seed=opts.seed,
                                   numpy_random_seed=opts.seed, torch_random_seed=opts.seed,
                                   fewshot_random_seed=opts.seed, bootstrap_iters=1000)


def to_result(raw: dict, opts: LmEvalOptions, version: str) -> EvalResult:
    metrics, stderr = {}, {}
    for task, values in raw["results"].items():
        for key, value in values.items():
            if key in ("alias", "sample_len") or not isinstance(value, (int, float)) or "_stderr," in key:
                continue
            metric, _, filt = key.partition(",")
            name = f"{task}/{metric}" if filt in ("none", "") else f"{task}/{key}"
            metrics[name] = float(value)
            err = values.get(f"{metric}_stderr,{filt}")
            if isinstance(err, (int, float)):
                stderr[name] = float(err)
    n_samples = {t: int(v.get("effective", v.get("original", 0))) for t, v in raw.get("n-samples", {}).items()}
    details = {"lm_eval_version": version, "task_versions": dict(raw.get("versions", {})), "n_samples": n_samples,
               "tasks": list(opts.tasks), "num_fewshot": opts.num_fewshot, "limit": opts.limit,
               "subset_seed": opts.seed if opts.limit is not None else None,
               "local_data": dict(opts.data)}
    return EvalResult(NAME, VERSION, metrics=metrics, stderr=stderr, n=sum(n_samples.values()), details=details)


def evaluate(ctx: EvalContext, options: dict) -> EvalResult:
    opts = build(LmEvalOptions, options or {}, f"eval.options.{NAME}")
    lm_eval = require_lm_eval()
    raw = run_tasks(ctx.model, ctx.tokenizer, opts, ctx.device)
    return to_result(raw, opts, lm_eval.__version__)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m evals.lm_eval", description=__doc__.splitlines()[0])
    p.add_argument("cell_dir", type=Path, help="a finished cell folder, results/<grid>/<cell>")
    p.add_argument("--tasks", required=True, help="comma-separated lm-eval task or group names")
    p.add_argument("--data", action="append", default=[], metavar="TASK[:SPLIT]=FILE",
                   help="read TASK's evaluation split from a local JSON Lines file (repeatable)")
    p.add_argument("--include-path", default=None, help="a folder of extra lm-eval task YAMLs")
    p.add_argument("--limit", type=int, default=None, help="a seeded random sample of N items per task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-fewshot", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (cuda when available)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = {}
    for item in args.data:
        key, sep, path = item.partition("=")
        if not sep or not key or not path:
            raise ConfigError(f"--data {item}: expected TASK=FILE or TASK:SPLIT=FILE")
        data[key] = path
    options = {"tasks": [t.strip() for t in args.tasks.split(",") if t.strip()], "data": data,
               "include_path": args.include_path, "limit": args.limit, "seed": args.seed,
               "num_fewshot": args.num_fewshot, "batch_size": args.batch_size}
    local_files(build(LmEvalOptions, options, f"eval.options.{NAME}"))  # bad flags fail before the model loads
    require_lm_eval()
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    ctx, _ = cell_context(args.cell_dir, device, {})
    result = run_isolated(ctx, NAME, lambda: (evaluate, VERSION), options)
    if result.status != "ok":
        print(f"{NAME}: {result.status} ({result.reason})")
        return 1
    for key, value in result.metrics.items():
        err = result.stderr.get(key)
        print(f"{key} = {value:.4f}" + (f" ± {err:.4f}" if err is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
