"""The base of every model's config, below both the model registry and `research.config`.

`research.config` builds a run's model section by looking `arch` up in the registry
(`research.models`), and every model's config derives from this class; keeping it in its own
module lets both import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from research.checks import ranged


@dataclass
class ModelConfig:
    """Base of every model's config; `arch` names the registry entry."""

    arch: str = "gpt"
    # size the model to this many parameters (research.sizing)
    match_params: float | None = ranged(None, gt=0)

    @property
    def context_length(self) -> int | None:
        """The longest context the model attends to; None (the base) for models without a limit
        (RNNs, n-grams). Configs with a `block_size` override it."""
        return None
