"""Every optimizer and schedule declares the dataclass of its `train.options.<name>` keys, and the
grid's `--dry-run` refuses a typo ("did you mean") and an out-of-range value of each, in one line
naming the dotted key. The cases come from the registries and the dataclasses themselves, so a new
plug-in is checked without a line here. Cells stored before the options moved still load."""

from __future__ import annotations

import dataclasses
import typing
from typing import Literal

import pytest
import yaml

from ablations.grid import config_hash, load_grid
from ablations.reproduce import recipe_names, recipe_path
from ablations.run import main
from research import cell
from research.checkpoint import load_run_config
from research.config import RunConfig
from research.errors import ConfigError, run_main
from research.optim import OPTIMIZERS, SCHEDULES
from tests.helpers import run_cli, write_grid

PLUGINS = [("optimizer", n) for n in OPTIMIZERS.names()] + [("schedule", n) for n in SCHEDULES.names()]
REGISTRY = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES}


def dry_run(tmp_path, capsys, *overrides: str) -> tuple[int, list[str]]:
    grid = tmp_path / "g.yaml"
    if not grid.exists():
        write_grid(grid)
    args = [str(grid), "--dry-run", "--results-dir", str(tmp_path / "r")]
    for override in overrides:
        args += ["--set", override]
    code = run_main(main, args)
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def out_of_range(f: dataclasses.Field):
    """A value just outside the field's declared bounds, or None when it declares none."""
    check = f.metadata.get("check")
    for bound, value in (("ge", lambda b: b - 1), ("gt", lambda b: b), ("le", lambda b: b + 1),
                         ("lt", lambda b: b)):
        if check is not None and getattr(check, bound) is not None:
            return value(getattr(check, bound))
    return None


def test_optimizer_and_schedule_names_do_not_collide():
    """`train.options.<name>` names one plug-in: no name is both an optimizer and a schedule."""
    assert not set(OPTIMIZERS.names()) & set(SCHEDULES.names())


@pytest.mark.parametrize(("kind", "name"), PLUGINS)
def test_every_plugin_declares_options_whose_defaults_build(kind, name):
    options = REGISTRY[kind].get(name).OPTIONS
    assert dataclasses.is_dataclass(options), f"{name}: decorate it with @takes(<its options dataclass>)"
    assert not options.__doc__.startswith(f"{options.__name__}("), f"{name}: a docstring saying why"  # not generated
    hints = typing.get_type_hints(options)
    for f in dataclasses.fields(options):  # every key declares what it accepts, as the config's own fields do
        assert hints[f.name] is bool or typing.get_origin(hints[f.name]) is Literal or "check" in f.metadata, f.name
    train = RunConfig.from_dict({"train": {kind: name}}).train
    assert train.options[name] == options()
    stored = RunConfig.from_dict(RunConfig.from_dict({"train": {kind: name}}).to_dict())  # config.yaml round trip
    assert stored.train.options == train.options


@pytest.mark.parametrize(("kind", "name"), PLUGINS)
def test_a_typo_and_an_out_of_range_value_fail_the_dry_run_in_one_line(kind, name, tmp_path, capsys):
    fields = dataclasses.fields(REGISTRY[kind].get(name).OPTIONS)
    key = f"train.options.{name}"
    if fields:
        first = fields[0].name
        typo = first[:-1] + first[-1].upper() + "x"
        code, lines = dry_run(tmp_path, capsys, f"train.{kind}={name}", f"{key}.{typo}=1")
        assert code == 2 and len(lines) == 1, lines
        assert f"{key}.{typo}: unknown key; did you mean '{first}'?" in lines[0], lines
    else:
        code, lines = dry_run(tmp_path, capsys, f"train.{kind}={name}", f"{key}.anything=1")
        assert code == 2 and len(lines) == 1 and f"{key}.anything: unknown key (it takes no keys)" in lines[0], lines
    for f in fields:
        bad = out_of_range(f)
        if bad is None:
            continue
        code, lines = dry_run(tmp_path, capsys, f"train.{kind}={name}", f"{key}.{f.name}={bad}")
        assert code == 2 and len(lines) == 1 and f"{key}.{f.name}: must be" in lines[0], lines


def test_options_of_a_plugin_not_chosen_or_not_registered_are_refused(tmp_path, capsys):
    cases = {"train.options.sgd.momentum=0": "train.options.sgd: options for optimizer 'sgd', but train.optimizer "
                                             "is 'adamw'; set train.optimizer: sgd or remove them",
             "train.options.wsd.decay_fraction=0.5": "train.options.wsd: options for schedule 'wsd', but "
                                                     "train.schedule is 'cosine'",
             "train.options.sgdd.momentum=0": "train.options.sgdd: unknown optimizer or schedule 'sgdd'; did you mean "
                                             "'sgd'?",
             "train.momentum=0": "train.momentum: now set per plug-in, as train.options.<name>.momentum for sgd, "
                                 "muon, tangent"}
    for override, fragment in cases.items():
        code, lines = dry_run(tmp_path, capsys, override)
        assert code == 2 and len(lines) == 1 and fragment in lines[0], (override, lines)


def test_a_cell_stored_with_flat_keys_is_read_in_the_current_shape(tmp_path):
    """A config.yaml written before the options moved: the chosen plug-ins' settings move under
    train.options, the unused ones (and null, which meant the plug-in's default) are dropped, and
    the file is rewritten once."""
    old = RunConfig().to_dict()
    old["train"].pop("options")
    old["train"].update(optimizer="sgd", schedule="step_decay", momentum=0.0, nesterov=None, tangent_base="adam",
                        decay_fraction=0.2, lr_decay=0.8333333333, decay_after_epochs=6, steps_per_epoch=1327)
    cell.write_config(tmp_path, old)
    cfg = load_run_config(tmp_path)
    assert cfg.train.options["sgd"].momentum == 0.0 and cfg.train.options["sgd"].nesterov is False
    assert cfg.train.options["step_decay"].lr_decay == 0.8333333333
    assert cfg.train.options["step_decay"].decay_after_epochs == 6 and cfg.train.steps_per_epoch == 1327
    on_disk = yaml.safe_load(cell.config_path(tmp_path).read_text())
    assert on_disk["train"]["options"] == {"sgd": {"momentum": 0.0}, "step_decay": {"lr_decay": 0.8333333333,
                                                                                     "decay_after_epochs": 6}}
    assert not set(cell.MOVED_TRAIN_KEYS) & set(on_disk["train"])
    muon = RunConfig().to_dict()
    muon["train"].pop("options")
    muon["train"].update(optimizer="muon", momentum=None, nesterov=None, decay_fraction=0.5)
    cell.write_config(tmp_path, muon)
    assert load_run_config(tmp_path).train.options == {"muon": RunConfig.from_dict(
        {"train": {"optimizer": "muon"}}).train.options["muon"], "cosine": SCHEDULES.get("cosine").OPTIONS()}


def test_help_lists_every_registered_name():
    """`python -m ablations.run --help` names what each registry-backed key takes, from the registries."""
    from evals import EVALS
    from research.data.sources import SOURCES
    from research.models import MODELS
    from research.tokenizers import TOKENIZERS

    out = " ".join(run_cli("--help").stdout.split())
    for key, registry in {"model.arch": MODELS, "data.source": SOURCES, "tokenizer.kind": TOKENIZERS,
                          "train.optimizer": OPTIMIZERS, "train.schedule": SCHEDULES, "eval.tasks": EVALS}.items():
        assert f"{key}: {', '.join(registry.names())}" in out, key
    recipes = " ".join(run_cli("--help", module="ablations.reproduce").stdout.split())
    assert all(name in recipes for name in recipe_names())


def test_cells_named_before_the_options_moved_keep_their_ids():
    """Cell ids hash what the user wrote; settings now under train.options hash as their flat names
    did, so a finished cell of a shipped recipe is still found (ids computed before the move)."""
    assert config_hash({"train": {"optimizer": "sgd", "options": {"sgd": {"momentum": 0.0}, "cosine": {}}}}) == \
        config_hash({"train": {"optimizer": "sgd", "momentum": 0.0}})
    assert config_hash({"train": {"options": {"sgd": {"momentum": 0.0}}}}) != config_hash({"train": {}})
    for recipe, old_id in (("ptb_lstm_small", "s0__3248dd"), ("ptb_lstm_medium", "s0__8fd97b")):
        assert [c.id for c in load_grid(recipe_path(recipe)).cells] == [old_id]


def test_a_plugin_without_options_is_refused_when_named(monkeypatch):
    monkeypatch.setitem(OPTIMIZERS._entries, "bare", "research.optim:param_groups")  # a function with no @takes
    with pytest.raises(ConfigError, match=r"^optimizer 'bare': declares no options; decorate it with @takes"):
        RunConfig.from_dict({"train": {"optimizer": "bare"}})
