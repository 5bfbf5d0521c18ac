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

from research.cell import MOVED_TRAIN_KEYS
from research.checks import (
    check_fields,
    lightning_accelerators,
    lightning_precisions,
    lightning_strategies,
    ranged,
    registry_names,
)
from research.errors import ConfigError, did_you_mean
from research.models.config import ModelConfig  # noqa: F401 - the run config's model section, re-exported

SOURCES = registry_names("research.data.sources", "SOURCES")
TOKENIZERS = registry_names("research.tokenizers", "TOKENIZERS")
OPTIMIZERS = registry_names("research.optim", "OPTIMIZERS")
SCHEDULES = registry_names("research.optim", "SCHEDULES")
ANY_SEED = "any integer seeds the generator"


@dataclass
class CleanConfig:
    """Cleaning applied to every document before tokenization; counts are recorded per cell."""

    normalize: Literal["NFC", "NFKC", "none"] = "NFC"
    fix_encoding: bool = True  # repair UTF-8 read as cp1252/latin-1 (mojibake such as 'â€œ')
    drop_incomplete: bool = False  # drop documents that do not end a sentence
    min_chars: int = ranged(1, ge=0)  # drop documents shorter than this after cleaning
    restrict_vocab: int | None = ranged(None, ge=1)  # keep only documents whose words are all in the top-N of train
    # bytes that are not UTF-8: "replace" them with U+FFFD (counted per split) or "error" naming file and byte
    invalid_utf8: Literal["replace", "error"] = "replace"


@dataclass
class FactsConfig:
    """The `facts` source's synthetic world (research.data.facts)."""

    entities: int = ranged(48, ge=2)  # people in training documents
    held_out: int = ranged(16, ge=2)  # people in no training document (open-book eval only)
    questions_per_entity: int = ranged(20, ge=1)  # training question documents per trained person
    multihop_fraction: float = ranged(0.3, ge=0, le=1)  # share of questions about a friend's attribute
    distractors: int = ranged(2, ge=0)  # facts about other people added to each context
    seed: int = ranged(0, free=ANY_SEED)


@dataclass
class DataConfig:
    # builtin | file | a preset name (see research.data.sources)
    source: str = ranged("builtin", choices=SOURCES, kind="data source")
    # local file or folder (file source, or a preset's local copy); checked by check_runnable
    path: str | None = ranged(None, nonempty=True)
    # auto: by extension; ".json" is a JSON array (llama2.c's TinyStories shards) or JSON Lines, by its first byte
    format: Literal["auto", "text", "jsonl", "json", "parquet"] = "auto"
    text_field: str = ranged("text", nonempty=True)  # JSON Lines / Parquet column holding the text
    # document separator in plain-text files ("" = one document)
    separator: str = ranged("<|endoftext|>", free="any text separates documents; '' keeps one document")
    val_fraction: float = ranged(0.1, ge=0.0, lt=1.0)  # held-out share, for sources without their own validation split
    test_fraction: float = ranged(0.0, ge=0.0, lt=1.0)  # held-out test share, for sources without their own test split
    split_seed: int = ranged(0, free=ANY_SEED)
    max_docs: int | None = ranged(None, ge=1)  # cap on training documents (after cleaning), for quick runs
    # validation size: held-out documents (instead of val_fraction), or the first N documents of an official split
    val_docs: int | None = ranged(None, ge=1)
    val_tokens: int | None = ranged(None, ge=1)  # stop the stored validation split after the document reaching N tokens
    # processes encoding the token cache (output identical for any value); None: the CPUs this process may use
    num_proc: int | None = ranged(None, ge=1)
    n_docs: int = ranged(4000, ge=2)  # builtin: stories generated (train + held-out)
    grammar_seed: int = ranged(0, free=ANY_SEED)  # builtin: seed of the story sampler
    clean: CleanConfig = field(default_factory=CleanConfig)
    # JSON Lines field holding a document's unscored context (see train.loss_on); rows without it are plain
    context_field: str = ranged("context", nonempty=True)
    # facts source: where the facts live, in other training documents or in each document's context
    facts_in: Literal["weights", "context"] = "weights"
    facts: FactsConfig = field(default_factory=FactsConfig)

    def validate(self) -> None:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(f"test_fraction: val_fraction + test_fraction must be < 1 to leave training data, got "
                             f"{self.val_fraction:g} + {self.test_fraction:g}")
        if self.source == "file" and self.path is None:
            raise ValueError("path: source 'file' needs a path: a text, JSONL or Parquet file (gzip ok), or a folder")


@dataclass
class TokenizerConfig:
    kind: str = ranged("char", choices=TOKENIZERS, kind="tokenizer")  # char | word | bpe
    # bpe: target size (required); word: cap, rarer words -> <unk>
    vocab_size: int | None = ranged(None, ge=2)
    lowercase: bool = False
    # word: "words" splits punctuation off words; "whitespace" keeps a pre-tokenised corpus's own
    # tokens (PTB, WikiText), so per-token perplexity matches the published per-word figures
    split: Literal["words", "whitespace"] = "words"
    # the tokenizer is trained on a seeded sample of about this many bytes of the training split
    # (every document when the split is smaller; None: always every document); recorded in meta.json
    train_bytes: int | None = ranged(100_000_000, ge=1)

    def validate(self) -> None:
        if self.kind == "bpe" and self.vocab_size is None:
            raise ValueError("vocab_size: required for bpe (e.g. 512, 4096)")
        if self.kind == "bpe" and self.vocab_size < BPE_MIN_VOCAB:
            raise ValueError(f"vocab_size: {self.vocab_size} is below the {BPE_MIN_VOCAB} a byte-level BPE needs "
                             "(256 bytes and end-of-text)")
        if self.kind == "char" and self.vocab_size is not None:
            raise ValueError("vocab_size: the char tokenizer takes every character seen; remove the key")


#: a byte-level BPE starts from the 256 byte values, plus the end-of-text token
BPE_MIN_VOCAB = 257


@dataclass
class ForgetConfig:
    """Forgetting what the context provides (research.forget): closed-book answers pushed to uniform."""

    weight: float = ranged(1.0, gt=0)  # multiplies the forgetting term added to the training loss
    # a finished cell folder (results/<grid>/<cell>, same data and tokenizer): its open-book answer
    # distributions are kept by a KL term; null: the ordinary loss alone keeps the open-book skill
    teacher: str | None = ranged(None, nonempty=True)
    probes: int = ranged(16, ge=1)  # closed-book (and open-book) questions per training step


@dataclass
class TrainConfig:
    max_steps: int = ranged(1000, ge=1)
    batch_size: int = ranged(32, ge=1)
    lr: float = ranged(1e-3, gt=0)
    min_lr: float | None = ranged(None, ge=0)  # cosine floor; default lr / 10
    warmup_steps: int = ranged(100, ge=0)
    weight_decay: float = ranged(0.1, ge=0)
    beta1: float = ranged(0.9, ge=0, lt=1)
    beta2: float = ranged(0.95, ge=0, lt=1)
    grad_clip: float | None = ranged(1.0, gt=0)
    # sgd | adam | adamw | muon | tangent (research.optim)
    optimizer: str = ranged("adamw", choices=OPTIMIZERS, kind="optimizer")
    # constant | warmup | cosine | wsd | step_decay
    schedule: str = ranged("cosine", choices=SCHEDULES, kind="schedule")
    # the chosen optimizer's and schedule's own settings, keyed by name (train.options.sgd.momentum);
    # built into each one's OPTIONS dataclass (research.optim) when the config loads, defaults filled in
    options: dict[str, Any] = ranged(factory=dict, free="each optimizer and schedule validates its own options")
    # optimizer steps per pass over the training data (step_decay counts epochs); None: the runner fills it in
    steps_per_epoch: int | None = ranged(None, ge=1)
    # auto: bf16-mixed where the hardware supports it, else 32-true
    precision: str = ranged("auto", choices=lightning_precisions, kind="precision")
    seed: int = ranged(0, free=ANY_SEED)
    eval_every: int = ranged(200, ge=1)  # steps between validation estimates
    eval_batches: int = ranged(20, ge=1)  # batches per validation estimate (a fixed, seeded set)
    log_every: int = ranged(10, ge=1)
    logger: Literal["csv", "tensorboard", "wandb"] = "csv"
    accelerator: str = ranged("auto", choices=lightning_accelerators, kind="accelerator")
    devices: int = ranged(1, ge=1)
    compile: bool | None = None  # torch.compile the inner nn.Module; None: on when training on CUDA
    progress_bar: bool | None = None  # None: only when stderr is a terminal
    seq_len: int | None = ranged(None, ge=1)  # tokens per training sequence; None: the model's block_size (64 for RNNs)
    # steps between resumable checkpoints; None: eval_every; 0: never
    checkpoint_every: int | None = ranged(None, ge=0)
    num_nodes: int = ranged(1, ge=1)  # multi-node training (DDP/FSDP across nodes)
    # Lightning strategy: auto, ddp, fsdp, ddp_spawn, ...
    strategy: str = ranged("auto", choices=lightning_strategies, kind="strategy")
    # continuation: documents' context spans (data.facts_in: context, JSON Lines `context`) are not scored
    loss_on: Literal["all", "continuation"] = "all"
    forget: ForgetConfig | None = None

    def validate(self) -> None:
        if self.schedule != "constant" and self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps: {self.warmup_steps} is longer than training (max_steps "
                             f"{self.max_steps}); lower warmup_steps or use schedule: constant")
        if self.min_lr is not None and self.min_lr > self.lr:
            raise ValueError(f"min_lr: {self.min_lr:g} is above lr ({self.lr:g})")
        self.options = plugin_options(self)


def plugin_options(train: TrainConfig, path: str = "train") -> dict[str, Any]:
    """`train.options` built into the chosen optimizer's and schedule's OPTIONS dataclasses, each
    present (with its defaults) so the stored config records every setting the run used. Options for
    a plug-in that is not chosen would be silently unused, so they are refused."""
    from research.optim import OPTIMIZERS, SCHEDULES

    chosen = {train.optimizer: (OPTIMIZERS, "optimizer"), train.schedule: (SCHEDULES, "schedule")}
    names = sorted({*OPTIMIZERS.names(), *SCHEDULES.names()})
    for name, given in train.options.items():
        where = f"{path}.options.{name}"
        if name not in names:
            raise ConfigError(f"{where}: unknown optimizer or schedule '{name}'{did_you_mean(str(name), names)} "
                              f"(valid: {', '.join(names)})")
        if name not in chosen:
            kind = "optimizer" if name in OPTIMIZERS else "schedule"
            raise ConfigError(f"{where}: options for {kind} '{name}', but {path}.{kind} is "
                              f"'{getattr(train, kind)}'; set {path}.{kind}: {name} or remove them")
        if given is not None and not isinstance(given, dict) and not dataclasses.is_dataclass(given):
            raise ConfigError(f"{where}: expected a mapping of the {chosen[name][1]}'s options, got {given!r}")
    built = {}
    for name, (registry, kind) in chosen.items():
        options = getattr(registry.get(name, key=f"{path}.{kind}"), "OPTIONS", None)
        if not (isinstance(options, type) and dataclasses.is_dataclass(options)):
            raise ConfigError(f"{kind} '{name}': declares no options; decorate it with @takes(<its options "
                              "dataclass>) (research.optim.NoOptions when it takes none)")
        given = train.options.get(name)
        built[name] = given if isinstance(given, options) else build(options, given or {}, f"{path}.options.{name}")
    return built


@dataclass
class EvalConfig:
    # cap on tokens scored in the final exact pass (reported as val_tokens); None scores the whole split.
    # 2M tokens: about a minute for a small model on one CPU core, so a full-size corpus cannot make it hours
    val_max_tokens: int | None = ranged(2_000_000, ge=1)
    samples: int = ranged(4, ge=0)  # stories generated per prompt
    sample_tokens: int = ranged(200, ge=1)
    temperature: float = ranged(0.8, ge=0)
    top_k: int | None = ranged(50, ge=1)
    top_p: float | None = ranged(None, gt=0, le=1)
    # word tokenizers: samples rejoined as English prose (research.tokenizers.detokenize); false: tokens
    # joined by spaces. Char and BPE tokenizers decode exactly either way.
    detokenize: bool = True
    # "" = unconditional, from end-of-text
    prompts: list[str] = ranged(factory=lambda: [""], free="any text is a prompt; '' samples from end-of-text")
    # loss at each context position, recorded during training (<cell>/per_position.json):
    per_position_every: int | None = ranged(None, ge=0)  # steps between records; None: train.eval_every; 0: off
    per_position_windows: int = ranged(512, ge=1)  # validation windows scored (one seeded set for every cell)
    # extra registered evals run after training; names checked by evals.run.check_eval_config
    tasks: list[str] = ranged(factory=list, nonempty=True)
    # per-task options, keyed by task name; each eval checks its own (evals.run.check_eval_config)
    options: dict[str, dict] = ranged(factory=dict, free="each eval validates its own options")

    def validate(self) -> None:
        own = (self.options.get("generation") or {}).get("samples")
        if "generation" in self.tasks and self.samples == 0 and own is None:
            raise ValueError("samples: is 0 but tasks has 'generation', which needs stories; set samples >= 1 "
                             "(or options.generation.samples), or drop the task")


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

    def validate(self) -> None:
        """Checks across sections: what one section asks of another."""
        context = self.model.context_length
        if self.train.seq_len is not None and context is not None and self.train.seq_len > context:
            raise ValueError(f"train.seq_len: {self.train.seq_len} is longer than the model's context "
                             f"(model.block_size {context}); lower seq_len or raise block_size")
        if self.train.forget is not None and self.data.source != "facts":
            raise ValueError("train.forget: needs data.source: facts (its questions are the closed-book probes)")


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
                if isinstance(value, dict) and dataclasses.is_dataclass(arm):
                    raise  # an optional section given as a mapping: its own key's message is the useful one
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
            if cls is TrainConfig and key in MOVED_TRAIN_KEYS:
                readers, new = MOVED_TRAIN_KEYS[key]
                raise ConfigError(f"{key_path}: now set per plug-in, as {_join(path, 'options')}.<name>.{new} "
                                  f"for {', '.join(readers)}")
            valid = f"valid: {', '.join(names)}" if names else "it takes no keys"
            raise ConfigError(f"{key_path}: unknown key{did_you_mean(str(key), names)} ({valid})")
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
    check_fields(obj, path)
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except ValueError as e:
            raise ConfigError(_where(path, str(e), names)) from None
    return obj


def _where(path: str, message: str, names: list[str]) -> str:
    """`train` + `warmup_steps: ...` -> `train.warmup_steps: ...`; other messages keep `train: ...`."""
    head = message.split(":", 1)[0]
    if ":" in message and head.split(".", 1)[0].split("[", 1)[0] in names:
        return _join(path, message)
    return f"{path or 'config'}: {message}"


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
