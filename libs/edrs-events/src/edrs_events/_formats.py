"""Defers the one slow import behind jsonschema's format checker to its first use.

jsonschema loads its format checkers when it is imported; with `jsonschema[format-nongpl]` that
imports `rfc3987_syntax` for the `iri` and `iri-reference` formats, and importing that builds a
Lark Earley parser from its grammar: 0.5 s on a quiet core, well over a second on a busy one, in
every process that imports `edrs_events` (each relay, consumer and CLI call), to check a format
that no shipped schema uses. A stand-in module takes its place until an `iri` value is first
checked (or anything else is asked of the module), which then imports the real one: the check
itself is unchanged.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any

_NAME = "rfc3987_syntax"
_LOADING = threading.Lock()  # two threads' first checks hand over once


class _Deferred(types.ModuleType):
    """Stands in for `rfc3987_syntax` until it is used, then hands over to the real module."""

    def _load(self) -> types.ModuleType:
        with _LOADING:
            if sys.modules.get(_NAME) is self:
                del sys.modules[_NAME]
            return importlib.import_module(_NAME)

    def is_valid_syntax(self, term: str, value: str) -> bool:
        return bool(self._load().is_valid_syntax(term, value))

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):  # the import system probes `__path__` and the like
            raise AttributeError(attribute)
        return getattr(self._load(), attribute)


def defer_rfc3987_syntax() -> None:
    """Put the stand-in in place, unless jsonschema or the real module is already loaded."""
    if _NAME in sys.modules or "jsonschema._format" in sys.modules:
        return
    spec = importlib.util.find_spec(_NAME)
    if spec is None:
        return  # not installed: jsonschema skips the iri formats, as it would anyway
    stand_in = _Deferred(_NAME)
    stand_in.__spec__ = spec  # what importlib.util.find_spec answers while it stands in
    sys.modules[_NAME] = stand_in
