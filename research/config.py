"""Typed run configuration: plain YAML in, checked dataclasses out.

A run config has five sections (data, tokenizer, model, train, eval). Every key is checked on
load: an unknown key is reported with its dotted path and the closest valid key, a wrong type
with the expected one. The model section is polymorphic: `model.arch` picks a registered model
whose own config dataclass validates the remaining keys, so a variant adds its fields without
touching this file.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from research.errors import ConfigError, did_you_mean


@dataclass
class CleanConfig:
    """Cleaning applied to every document before tokenization; counts are recorded per cell."""

    normalize: Literal["NFC", "NFKC", "none"] = "NFC"
    fix_encoding: bool = True  # repair UTF-8 read as cp1252/latin-1 (mojibake such as 'â€œ')
    drop_incomplete: bool = False  # drop documents that do not end a sentence
    min_chars: int = 1  # drop documents shorter than this after cleaning
    restrict_vocab: int | None = None  # keep only documents whose words are all in the top-N of train


@dataclass
class DataConfig:
    source: str = "builtin"  # builtin | file | a preset name (see research.data.sources)
    path: str | None = None  # local file or folder (file source, or a preset's local copy)
    format: Literal["auto", "text", "jsonl", "parquet"] = "auto"
    text_field: str = "text"  # JSON Lines / Parquet column holding the text
    separator: str = "<|endoftext|>"  # document separator in plain-text files ("" = one document)
    val_fraction: float = 0.1  # held-out share, for sources without their own validation split
    test_fraction: float = 0.0  # held-out test share, for sources without their own test split
    split_seed: int = 0
    max_docs: int | None = None  # cap on training documents (after cleaning), for quick runs
    n_docs: int = 4000  # builtin: stories generated (train + held-out)
    grammar_seed: int = 0  # builtin: seed of the story sampler
    clean: CleanConfig = field(default_factory=CleanConfig)


@dataclass
class TokenizerConfig:
    kind: str = "char"  # char | word | bpe
    vocab_size: int | None = None  # bpe: target size (required); word: cap, rarer words -> <unk>
    lowercase: bool = False
    # word: "words" splits punctuation off words; "whitespace" keeps a pre-tokenised corpus's own
    # tokens (PTB, WikiText), so per-token perplexity matches the published per-word figures
    split: Literal["words", "whitespace"] = "words"


@dataclass
class ModelConfig:
    """Base of every model's config; `arch` names the registry entry."""

    arch: str = "gpt"
    match_params: float | None = None  # size the model to this many parameters (research.sizing)


@dataclass
class TrainConfig:
    max_steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    min_lr: float | None = None  # cosine floor; default lr / 10
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float | None = 1.0
    optimizer: str = "adamw"  # sgd | adam | adamw | muon (research.optim)
    schedule: str = "cosine"  # constant | warmup | cosine | wsd | step_decay
    momentum: float | None = None  # sgd / muon momentum; None: 0.9 for sgd, 0.95 for muon
    nesterov: bool | None = None  # sgd / muon Nesterov momentum; None: off for sgd, on for muon
    decay_fraction: float = 0.2  # wsd: share of max_steps in the final linear decay (Hägele et al. 2024)
    lr_decay: float = 0.5  # step_decay: lr factor per epoch once decay starts (Zaremba et al. 2014)
    decay_after_epochs: int = 4  # step_decay: epochs at full lr before the first decay
    steps_per_epoch: int | None = None  # step_decay: optimizer steps per pass over the training data
    precision: str = "auto"  # auto: bf16-mixed where the hardware supports it, else 32-true
    seed: int = 0
    eval_every: int = 200  # steps between validation estimates
    eval_batches: int = 20  # batches per validation estimate (a fixed, seeded set)
    log_every: int = 10
    logger: Literal["csv", "tensorboard", "wandb"] = "csv"
    accelerator: str = "auto"
    devices: int = 1
    compile: bool | None = None  # torch.compile the inner nn.Module; None: on when training on CUDA
    progress_bar: bool | None = None  # None: only when stderr is a terminal
    seq_len: int | None = None  # tokens per training sequence; None: the model's block_size (64 for RNNs)
    checkpoint_every: int | None = None  # steps between resumable checkpoints; None: eval_every; 0: never
    num_nodes: int = 1  # multi-node training (DDP/FSDP across nodes)
    strategy: str = "auto"  # Lightning strategy: auto, ddp, fsdp, ddp_spawn, ...


@dataclass
class EvalConfig:
    val_max_tokens: int | None = None  # cap on tokens scored in the final full pass (None = all)
    samples: int = 4  # stories generated per prompt
    sample_tokens: int = 200
    temperature: float = 0.8
    top_k: int | None = 50
    top_p: float | None = None
    prompts: list[str] = field(default_factory=lambda: [""])  # "" = unconditional, from end-of-text
    # loss at each context position, recorded during training (<cell>/per_position.json):
    per_position_every: int | None = None  # steps between records; None: train.eval_every; 0: off
    per_position_windows: int = 512  # validation windows scored (one seeded set for every cell); 64: jagged
    tasks: list[str] = field(default_factory=list)  # extra registered evals run after training
    options: dict[str, dict] = field(default_factory=dict)  # per-task options, keyed by task name


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @classmethod
    def from_dict(cls, raw: dict | None, where: str = "") -> RunConfig:
        return build(cls, raw or {}, where)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# Validation


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return getattr(origin, "__name__", str(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check `value` against annotation `tp`, converting only where YAML is known to mislead."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arm in typing.get_args(tp):
            try:
                return _coerce(value, arm, path)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{path}: expected null, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        choices = [str(a) for a in typing.get_args(tp)]
        raise ConfigError(f"{path}: {value!r} is not one of {', '.join(choices)}{did_you_mean(str(value), choices)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping of {tp.__name__} keys, got {value!r}")
        return build(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                f = None
            if f is not None and f.is_integer():
                return int(f)
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (arm,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, arm, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    raise TypeError(f"unsupported annotation {tp!r} at {path}")


def build(cls: type, raw: dict, path: str = "") -> Any:
    """Build dataclass `cls` from `raw`, checking every key; the model section dispatches on arch."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        key_path = _join(path, str(key))
        if key not in names:
            raise ConfigError(f"{key_path}: unknown key{did_you_mean(str(key), names)} (valid: {', '.join(names)})")
        tp = hints[key]
        if tp is ModelConfig:
            kwargs[key] = build_model_config(value, key_path)
        else:
            kwargs[key] = _coerce(value, tp, key_path)
    if cls is RunConfig and "model" not in kwargs:
        kwargs["model"] = build_model_config({}, _join(path, "model"))
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path or 'config'}: {e}") from None
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except ValueError as e:
            raise ConfigError(f"{path or 'config'}: {e}") from None
    return obj


def build_model_config(raw: Any, path: str) -> ModelConfig:
    from research.models import MODELS

    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping, got {raw!r}")
    arch = raw.get("arch", ModelConfig.arch)
    if not isinstance(arch, str):
        raise ConfigError(f"{path}.arch: expected a model name, got {arch!r}")
    model_cls = MODELS.get(arch, key=f"{path}.arch")
    return build(model_cls.Config, raw, path)


def set_dotted(tree: dict, dotted: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, creating intermediate mappings."""
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        elif not isinstance(nxt, dict):
            raise ConfigError(f"{dotted}: '{part}' is a value, not a section")
        node = nxt
    node[parts[-1]] = value


def get_dotted(tree: dict, dotted: str, default: Any = None) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def parse_value(text: str) -> Any:
    """`--set key=value`: the value is read as YAML, so `3`, `1e-3`, `true`, `[1, 2]` keep their types."""
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected dotted.key=value, e.g. --set train.max_steps=100")
        out[key.strip()] = parse_value(value)
    return out
