"""The model registry: a name in `model.arch` -> a `LanguageModel` subclass with a `Config`.

Adding a model is one file in this folder and one line here.
"""

from __future__ import annotations

from research.registry import Registry

MODELS = Registry(
    "model",
    {
        "gpt": "research.models.gpt:GPT",
    },
)


def build_model(cfg, vocab_size: int):
    """Instantiate the registered model for `cfg.arch` over a vocabulary of `vocab_size`."""
    return MODELS.get(cfg.arch, key="model.arch")(cfg, vocab_size)
