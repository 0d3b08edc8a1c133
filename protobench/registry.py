"""One registry type for every kind of named component.

Methods, datasets, OOD scores, distances and backbones are each kept in a
:class:`Registry` (timm's ``@register_model`` / ``list_models('*proto*')``)::

    BACKBONES: Registry[Builder] = Registry("backbone")

    @BACKBONES.register("conv4")          # decorator ...
    def _conv4(in_shape): ...

    BACKBONES.register("mlp", _mlp)        # ... or call

    BACKBONES.get("conv5")      # RegistryError: unknown backbone 'conv5' ...; did you mean 'conv4'?
    BACKBONES.names("res*")     # ['resnet18', 'resnet32', 'resnet34']
    BACKBONES.describe("mlp")   # {'kind': 'backbone', 'name': 'mlp', 'parameters': [...], ...}

Error messages and the CLI listings (``protobench list KIND [PATTERN]``) are generated
from the registries. :func:`registry` maps a kind (``methods``, ``datasets``, ``scores``,
``metrics``, ``backbones``) to its filled registry.

This module sits at the bottom layer: it imports only :mod:`protobench.errors` (and the
standard library); :func:`registry` reaches the registering modules through
``importlib`` at call time.
"""

from __future__ import annotations

import builtins
import difflib
import fnmatch
import importlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

from protobench.errors import RegistryError, unknown_name

T = TypeVar("T")

WILDCARDS = frozenset("*?[")


def matches(name: str, pattern: str | None) -> bool:
    """Whether ``name`` matches an fnmatch-style ``pattern`` (case-insensitive).

    ``None`` matches everything; a pattern without wildcards (``*``, ``?``, ``[``)
    matches as a substring, so ``proto`` finds ``protonet`` and ``proto-clip``.
    """
    if pattern is None:
        return True
    pattern = pattern.lower()
    if not WILDCARDS & set(pattern):
        pattern = f"*{pattern}*"
    return fnmatch.fnmatchcase(name.lower(), pattern)


def parameters(fn: Callable[..., Any], skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The named parameters of ``fn`` (a class: its constructor), from ``inspect.signature``.

    Each is ``{"name", "type", "default"}`` (``type`` the annotation as written, ``""``
    when absent; ``default`` absent for a required parameter). ``self``, ``*args``,
    ``**kwargs`` and the names in ``skip`` are left out.
    """
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):  # builtins without a signature
        return []
    out = []
    for p in sig.parameters.values():
        if p.name == "self" or p.name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        ann = p.annotation
        if ann is p.empty:
            ann = ""
        elif not isinstance(ann, str):  # evaluated annotations (no postponed evaluation)
            ann = getattr(ann, "__name__", str(ann))
        entry: dict[str, Any] = {"name": p.name, "type": ann}
        if p.default is not p.empty:
            entry["default"] = p.default
        out.append(entry)
    return out


def summary(obj: Any) -> str:
    """A one-line summary: the ``summary`` attribute, else the first paragraph of the
    object's own docstring (a class does not inherit its base's)."""
    text = getattr(obj, "summary", "")
    if isinstance(text, str) and text:
        return text
    doc = inspect.cleandoc(getattr(obj, "__doc__", None) or "")  # own docstring only
    return " ".join(doc.split("\n\n")[0].split()).replace("``", "")


class Registry(Generic[T]):
    """Named objects of one ``kind`` (``"method"``, ``"dataset"``, ...).

    ``on_register(name, obj)`` runs before an object is stored (e.g. capability checks;
    an exception leaves the registry unchanged). ``describer(name, obj)`` adds
    kind-specific fields to :meth:`describe`. Names are listed in sorted order.
    """

    def __init__(self, kind: str, *, on_register: Callable[[str, T], None] | None = None,
                 describer: Callable[[str, T], dict[str, Any]] | None = None) -> None:
        self.kind = kind
        self._on_register = on_register
        self._describer = describer
        self._entries: dict[str, T] = {}

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name: str, obj: T | None = None) -> Any:
        """Store ``obj`` under ``name`` and return it; without ``obj``, a decorator that does.

        A name registered twice is refused (``ValueError``: a programming error, not bad
        user input).
        """
        if obj is not None:
            return self._add(name, obj)

        def deco(target: T) -> T:
            return self._add(name, target)

        return deco

    def _add(self, name: str, obj: T) -> T:
        if not name or not isinstance(name, str):
            raise ValueError(f"a {self.kind} needs a non-empty string name, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered "
                             f"({self._entries[name]!r})")
        if self._on_register is not None:
            self._on_register(name, obj)
        self._entries[name] = obj
        return obj

    def get(self, name: str) -> T:
        """The object registered as ``name``; an unknown name is a
        :class:`~protobench.errors.RegistryError` that lists the valid names and, when there
        are any, the close matches."""
        if name in self._entries:
            return self._entries[name]
        error = unknown_name(self.kind, name, self.names())
        close = self.close_matches(name)
        if close:
            error = RegistryError(f"{error}; did you mean {' or '.join(map(repr, close))}?")
        raise error

    def close_matches(self, name: str, n: int = 3) -> builtins.list[str]:
        """Registered names that look like ``name`` (typos, other case)."""
        lowered = {k.lower(): k for k in self._entries}
        found = difflib.get_close_matches(str(name).lower(), builtins.list(lowered), n=n,
                                          cutoff=0.6)
        return [lowered[k] for k in found]

    def names(self, pattern: str | None = None) -> builtins.list[str]:
        """Sorted registered names matching ``pattern`` (see :func:`matches`)."""
        return [k for k in sorted(self._entries) if matches(k, pattern)]

    def list(self, pattern: str | None = None) -> builtins.list[T]:
        """The registered objects whose names match ``pattern``, sorted by name."""
        return [self._entries[k] for k in self.names(pattern)]

    def items(self, pattern: str | None = None) -> builtins.list[tuple[str, T]]:
        """``(name, object)`` pairs matching ``pattern``, sorted by name."""
        return [(k, self._entries[k]) for k in self.names(pattern)]

    def describe(self, name: str) -> dict[str, Any]:
        """What a listing shows about ``name``: ``kind``, ``name``, ``summary`` and the
        constructor (or function) ``parameters`` with their defaults (:func:`parameters`),
        plus the kind's own fields (for methods: capabilities, job options, presets)."""
        obj = self.get(name)
        info: dict[str, Any] = {"kind": self.kind, "name": name, "summary": summary(obj),
                                "parameters": parameters(obj) if callable(obj) else []}
        if self._describer is not None:
            info.update(self._describer(name, obj))
        return info


# kind -> (module whose import fills the registry, module holding it, attribute)
KINDS: dict[str, tuple[str, str, str]] = {
    "methods": ("protobench.methods", "protobench.methods.base", "METHODS"),
    "datasets": ("protobench.datasets", "protobench.datasets.base", "DATASETS"),
    "scores": ("protobench.ood.scores", "protobench.ood.scores.base", "SCORES"),
    "metrics": ("protobench.geometry.metrics", "protobench.geometry.metrics", "METRICS"),
    "backbones": ("protobench.backbones", "protobench.backbones", "BACKBONES"),
}


def registry(kind: str) -> Registry[Any]:
    """The filled registry of ``kind`` (``methods``, ``datasets``, ``scores``, ``metrics``,
    ``backbones``; the singular is accepted too); importing its package registers every
    built-in entry. An unknown kind is a :class:`~protobench.errors.RegistryError`."""
    key = kind if kind in KINDS else f"{kind}s"
    if key not in KINDS:
        raise unknown_name("kind", kind, list(KINDS))
    fill, home, attr = KINDS[key]
    importlib.import_module(fill)
    return getattr(importlib.import_module(home), attr)
