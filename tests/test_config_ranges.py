"""Every field of the data, tokenizer, train and eval sections refuses an out-of-range value with a
message naming its dotted path. The cases are generated from the dataclasses themselves, so a new
field without a declared range (or a stated reason why every value is valid) fails here."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal

import pytest

from ablations.run import main
from research.config import ModelConfig, RunConfig
from research.errors import ConfigError, run_main
from tests.helpers import write_grid


def leaves(cls: type, prefix: str) -> list[tuple[str, dataclasses.Field, Any]]:
    """(dotted path, field, annotation) of every non-dataclass field under `cls`, recursively."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        optional = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        if optional:  # an optional section (train.forget): its own fields
            tp = optional[0]
        if dataclasses.is_dataclass(tp):
            out += leaves(tp, f"{prefix}.{f.name}")
        else:
            out.append((f"{prefix}.{f.name}", f, tp))
    return out


FIELDS = [leaf for section in ("data", "tokenizer", "train", "eval")
          for leaf in leaves(typing.get_type_hints(RunConfig)[section], section)]
FIELDS += [(f"model.{f.name}", f, typing.get_type_hints(ModelConfig)[f.name]) for f in dataclasses.fields(ModelConfig)
           if f.name != "arch"]  # model.arch: tests/test_config_errors.py; each model checks its own fields


def arms(tp) -> list:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(tp) if a is not type(None)]
    return [tp]


def bad_values(tp, check) -> list:
    """Values outside what the field accepts, derived from its type and its declared check."""
    (arm, *_) = arms(tp)
    if typing.get_origin(arm) is Literal:
        return ["not-one-of-the-choices"]
    if arm is bool:
        return ["maybe"]
    assert check is not None, "no range declared: give the field ranged(..., ge=/gt=/le=/lt=/choices=/free=)"
    if check.free:
        return []
    is_list = typing.get_origin(arm) is list
    out: list = []
    if check.ge is not None:
        out.append(check.ge - 1 if arm is int else check.ge - 0.5)
    if check.gt is not None:
        out.append(int(check.gt) if arm is int else check.gt)
    if check.le is not None:
        out.append(check.le + 1)
    if check.lt is not None:
        out.append(check.lt)
    if arm is float:
        out += [math.nan, math.inf]
    if check.choices is not None:
        out.append("no-such-name")
    if check.nonempty:
        out.append([""] if is_list else "")
    assert out, "the declared check refuses nothing"
    return out


@pytest.mark.parametrize(("path", "fld", "tp"), FIELDS, ids=[p for p, _, _ in FIELDS])
def test_every_field_refuses_out_of_range_values(path, fld, tp):
    check = fld.metadata.get("check")
    if check is not None and check.free:
        assert len(check.free) > 10  # says why every value of its type is valid
    values = bad_values(tp, check)
    section, *rest = path.split(".")
    for value in values:
        raw: dict = {}
        node = raw.setdefault(section, {})
        for part in rest[:-1]:
            node = node.setdefault(part, {})
        node[rest[-1]] = value
        with pytest.raises(ConfigError) as err:
            RunConfig.from_dict(raw)
        assert str(err.value).startswith(f"{path}"), (value, str(err.value))
        assert "\n" not in str(err.value)


def test_defaults_are_valid():
    cfg = RunConfig.from_dict({})
    assert cfg.train.batch_size == 32 and cfg.data.val_fraction == 0.1


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"train": {"max_steps": 50}}, "train.warmup_steps: 100 is longer than training"),
        ({"train": {"max_steps": 50, "schedule": "constant"}}, None),
        ({"train": {"lr": 1e-3, "min_lr": 1e-2}}, "train.min_lr: 0.01 is above lr"),
        ({"data": {"val_fraction": 0.5, "test_fraction": 0.5}}, "data.test_fraction: val_fraction + test_fraction"),
        ({"data": {"source": "file"}}, "data.path: source 'file' needs a path"),
        ({"tokenizer": {"kind": "bpe"}}, "tokenizer.vocab_size: required for bpe"),
        ({"tokenizer": {"kind": "bpe", "vocab_size": 100}}, "tokenizer.vocab_size: 100 is below the 257"),
        ({"tokenizer": {"kind": "char", "vocab_size": 100}}, "tokenizer.vocab_size: the char tokenizer"),
        ({"model": {"arch": "gpt", "block_size": 32}, "train": {"seq_len": 64}},
         "train.seq_len: 64 is longer than the model's context (model.block_size 32)"),
        ({"model": {"arch": "lstm"}, "train": {"seq_len": 500}}, None),  # a recurrent model has no context limit
        ({"eval": {"tasks": ["generation"], "samples": 0}}, "eval.samples: is 0 but tasks has 'generation'"),
        ({"eval": {"tasks": ["generation"], "samples": 0, "options": {"generation": {"samples": 2}}}}, None),
        ({"train": {"strategy": "dpp"}}, "train.strategy: unknown strategy 'dpp'; did you mean 'ddp'?"),
        ({"train": {"precision": "bf16"}}, "train.precision: unknown precision 'bf16'"),
    ],
)
def test_cross_field_checks(raw, expected):
    if expected is None:
        RunConfig.from_dict(raw)
        return
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict(raw)
    assert str(err.value).startswith(expected), str(err.value)


def test_the_issues_examples_fail_the_dry_run_in_one_line(tmp_path, capsys):
    """Each of these passed `--dry-run` before; now each is one line naming the key, exit code 2."""
    grid = write_grid(tmp_path / "g.yaml")
    cases = {"train.batch_size=0": "train.batch_size", "train.max_steps=-5": "train.max_steps",
             "train.lr=-1": "train.lr", "train.seq_len=0": "train.seq_len",
             "data.val_fraction=1.5": "data.val_fraction",
             "data.n_docs=0": "data.n_docs", "eval.temperature=-1": "eval.temperature",
             "data.path=/dev/zero": "data.path '/dev/zero' is not a regular file",
             "eval.tasks=[perplexty]": "did you mean 'perplexity'",
             "eval.options={blimpp: {}}": "eval.options.blimpp"}
    for override, fragment in cases.items():
        code = run_main(main, [str(grid), "--dry-run", "--set", override, "--results-dir", str(tmp_path / "r")])
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and fragment in lines[0], (override, lines)
    assert not (tmp_path / "r").exists()


def test_an_evals_options_are_checked_by_the_dry_run(tmp_path, capsys):
    """A typo in an eval's options and a value out of its range fail `--dry-run` in one line
    naming the dotted key, not hours later after training."""
    grid = write_grid(tmp_path / "g.yaml")
    cases = {"eval.options.hellaswag.limt=100": "eval.options.hellaswag.limt: unknown key; did you mean 'limit'?",
             "eval.options.hellaswag.limit=-3": "eval.options.hellaswag.limit: must be >= 1, got -3"}
    for override, fragment in cases.items():
        code = run_main(main, [str(grid), "--dry-run", "--set", "eval.tasks=[hellaswag]", "--set", override,
                               "--results-dir", str(tmp_path / "r")])
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and fragment in lines[0], (override, lines)
