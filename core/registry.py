"""A name -> constructor table, the one pattern behind models, losses and explainers.

`Registry.register(name)` is a decorator; `registry[name]` raises the registry's own error type
listing the known names; `registry.build(name, *args, **kwargs)` calls the constructor and refuses
a keyword it does not take (a misspelt hyperparameter is an error, never silently ignored).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class Registry(dict):
    """A dict of registered constructors with a clear error for unknown names and arguments.

    Args:
        kind: what the entries are, for messages ("architecture", "loss", "method").
        error: exception type raised for an unknown name or argument (a ValueError subclass).
    """

    def __init__(self, kind: str, error: type[Exception] = ValueError):
        super().__init__()
        self.kind, self.error = kind, error

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding ``fn`` (or a class) under ``name``; a name can be taken only once."""

        def _register(obj: T) -> T:
            if name in self:
                raise self.error(f"{self.kind} {name!r} is already registered")
            self[name] = obj
            return obj

        return _register

    def __missing__(self, name: str):
        raise self.error(f"unknown {self.kind} {name!r}; choose one of {', '.join(sorted(self))}")

    def check_arguments(self, name: str, kwargs: dict[str, Any]) -> None:
        """Raise if ``name``'s constructor takes no keyword of ``kwargs`` (``**kwargs`` takes any)."""
        params = inspect.signature(self[name]).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return
        accepted = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise self.error(f"{self.kind} {name!r} has no argument(s) {unknown}; it takes {sorted(accepted)}")

    def defaults(self, name: str) -> dict[str, Any]:
        """The keyword arguments ``name``'s constructor has defaults for, with those defaults (what a build without
        arguments binds, for a record of the settings a run used)."""
        return {n: p.default for n, p in inspect.signature(self[name]).parameters.items()
                if p.default is not inspect.Parameter.empty}

    def build(self, name: str, *args, **kwargs):
        """``self[name](*args, **kwargs)`` after checking every keyword against its signature."""
        self.check_arguments(name, kwargs)
        return self[name](*args, **kwargs)
