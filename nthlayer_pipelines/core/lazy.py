"""A module imported on first use rather than when the code location loads.

Every Dagster run starts a process that loads the whole code location, the apply's too, which reads no
table; pandas alone (with numpy) is about a third of what the code location adds to Dagster's own import.
Modules that use pandas bind `pd = lazy_import("pandas")` at run time and import it for type checkers.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any


class _Deferred(ModuleType):
    """Stands in for a module until an attribute is read; `importlib.import_module` is thread-safe."""

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(importlib.import_module(self.__name__), attribute)
        setattr(self, attribute, value)  # later reads skip the import machinery
        return value


def lazy_import(name: str) -> ModuleType:
    """`name` itself when something imported it already, else a stand-in that imports it on first use."""
    return sys.modules.get(name) or _Deferred(name)
