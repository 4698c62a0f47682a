"""Runtime registry: ``@register_runtime`` on a ``Runtime`` subclass, or an entry point in the
group ``resnet18_bench.runtimes`` naming one, so another package can add a runtime without
editing this project. Items run in each runtime's declared ``run_order`` (eager first: the reference).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from compress.errors import UserError

from .base import Runtime

ENTRY_POINT_GROUP = "resnet18_bench.runtimes"
_RUNTIMES: dict[str, Runtime] = {}
_plugins_loaded = False


def register_runtime(cls: type[Runtime]) -> type[Runtime]:
    """Class decorator: register one instance of ``cls`` under ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, Runtime)) or cls.name == Runtime.name:
        raise TypeError(f"{cls!r} is not a named Runtime subclass")
    if cls.name in _RUNTIMES:
        raise ValueError(f"runtime {cls.name} registered twice")
    flags = {o.flag for rt in _RUNTIMES.values() for o in rt.options}
    clash = [o.flag for o in cls.options if o.flag in flags]
    if clash:
        raise ValueError(f"runtime {cls.name}: option {clash[0]} is already declared by another runtime")
    _RUNTIMES[cls.name] = cls()
    return cls


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as e:  # a broken plugin names itself instead of a traceback
            raise UserError(f"runtime plugin {ep.name} ({ep.value}) failed to load: {type(e).__name__}: {e}") from None
        if isinstance(obj, type) and issubclass(obj, Runtime) and obj.name not in _RUNTIMES:
            register_runtime(obj)


def runtimes() -> dict[str, Runtime]:
    """Every registered runtime by name, in run order (a copy)."""
    _load_plugins()
    ordered = sorted(enumerate(_RUNTIMES.values()), key=lambda pair: (pair[1].run_order, pair[0]))
    return {rt.name: rt for _, rt in ordered}


def get_runtime(name: str) -> Runtime:
    found = runtimes()
    if name not in found:
        raise UserError(f"unknown runtime {name!r}: choose from {', '.join(found)}")
    return found[name]


@contextmanager
def isolated() -> Iterator[None]:
    """Runtimes registered inside the block are gone after it (tests register toy runtimes)."""
    saved = dict(_RUNTIMES)
    try:
        yield
    finally:
        _RUNTIMES.clear()
        _RUNTIMES.update(saved)
