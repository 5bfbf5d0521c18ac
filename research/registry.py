"""Name -> implementation registries, resolved lazily so import order never matters.

An entry is a "module:attribute" string; it is imported the first time the name is used. A new
model, tokenizer or eval is one file and one line in its registry.
"""

from __future__ import annotations

import importlib
from typing import Any

from research.errors import ConfigError, did_you_mean


class Registry:
    def __init__(self, kind: str, entries: dict[str, str]):
        self.kind = kind
        self._entries = dict(entries)
        self._loaded: dict[str, Any] = {}

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def register(self, name: str, target: str) -> None:
        self._entries[name] = target
        self._loaded.pop(name, None)

    def get(self, name: str, key: str | None = None) -> Any:
        if name not in self._entries:
            where = f"{key}: " if key else ""
            raise ConfigError(
                f"{where}unknown {self.kind} '{name}'{did_you_mean(name, self._entries)} "
                f"(valid: {', '.join(self.names())})"
            )
        if name not in self._loaded:
            module, _, attr = self._entries[name].partition(":")
            self._loaded[name] = getattr(importlib.import_module(module), attr)
        return self._loaded[name]
