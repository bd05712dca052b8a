"""``Record``: value classes over ``__slots__`` with the equality and repr
that ``dataclasses`` would give them.

The modules a device runs are imported in the zygote before it forks, and
every mock inherits their memory: page tables that each fork copies and each
exit tears down again. ``dataclasses`` imports ``inspect`` (and with it
``ast``, ``dis`` and ``tokenize``), about 1 MiB that no device needs at run
time. The classes that a device uses therefore write their ``__init__`` by
hand and take ``__eq__`` and ``__repr__`` from here.
"""

from __future__ import annotations

from typing import Any


class Record:
    """Compares and prints by the fields named in the subclasses' ``__slots__``."""

    __slots__ = ()

    @classmethod
    def _fields(cls) -> tuple[str, ...]:
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            names.extend(klass.__dict__.get("__slots__", ()))
        return tuple(names)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._fields())

    # No __hash__: defining __eq__ leaves it None, so a mutable record is
    # unhashable, as dataclasses make it.

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields())
        return f"{type(self).__name__}({inner})"


class FrozenRecord(Record):
    """A Record whose fields are set once, by ``__init__`` (``_init``)."""

    __slots__ = ()

    def _init(self, **values: Any) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only: cannot set {name!r}")

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, n) for n in self._fields()))
