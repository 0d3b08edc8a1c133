"""What tells the rows of a board apart: a record's identity and the "config" label.

A record's *identity* is its configuration flattened to ``key -> text`` pairs (nested dicts
joined with dots, ``metric_options.m -> "128"``), plus the evaluated split and the seed,
plus the fit choices that change what was evaluated (``checkpoint``, ``geodesic_pool``,
...). Unset values (None, ``""``, empty dicts and lists) are left out: a key absent from a
record means "not set, the default applied". Measured statistics (losses, seconds,
accuracy matrices, validation scores) are outcomes, not parameters, and never part of it.

The label of a row shows the keys a reader always needs (backbone, metric; a preset's
name, the checkpoint and the training length when the row has them), then every key
whose value (or presence) differs between the rows it is shown with (the renderer passes
the rows of one setting and method). Two rows with different identities therefore never
share a label.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from protobench.tasks.record import ResultRecord

#: fit statistics that are choices (what was evaluated), not measurements
FIT_CHOICES = ("checkpoint", "train_steps", "train_ways_used", "geodesic_pool", "centred_on")
#: flattened config keys (and their sub-keys) that are outcomes or provenance, not parameters
OUTCOMES = ("selected.val_accuracy", "selected.val_manifest", "selected.val_setting",
            "open_world.per_experience", "stream.class_order", "stream.sizes",
            "id_test_count", "ood_counts", "groups", "sweep")
#: keys every label starts with, values only (``conv4 geodesic``)
HEAD = ("backbone", "clip_model", "pretrained", "metric")
#: keys every label shows as ``key=value`` whenever the record has them: the preset a row
#: was run from, the checkpoint it evaluated, how long it trained
ALWAYS = ("preset", "checkpoint", "train_steps")
MAX_VALUE = 80  # longer values are shortened to a part and a hash of the whole

_ABSENT = "\0absent"


def _unset(v: Any) -> bool:
    return v is None or (isinstance(v, (str, list, tuple, dict)) and len(v) == 0)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": None}`` -> ``{"a.b": 1}`` (unset values dropped)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif not _unset(v):
            out[key] = v
    return out


def _is_outcome(key: str) -> bool:
    return any(key == p or key.startswith(p + ".") for p in OUTCOMES)


def text(v: Any) -> str:
    """A value as a reader types it: strings bare, the rest as JSON (``true``, ``0.1``)."""
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True)


def identity(r: ResultRecord) -> dict[str, str]:
    """Everything that defines what ``r`` measured, as flattened ``key -> text`` pairs."""
    params = r.parameters()  # the method's parameters, then the job context
    if params.get("resolved_backbone"):  # OOD rows: "auto" -> the backbone it chose
        params["backbone"] = params["resolved_backbone"]
    params.pop("resolved_backbone", None)
    flat = {k: v for k, v in flatten({k: v for k, v in params.items() if k != "fit"}).items()
            if not _is_outcome(k)}
    if len(r.seeds) > 1:
        flat["seeds"] = len(r.seeds)
    fit = r.config.get("fit") or {}
    if isinstance(fit, dict) and isinstance(fit.get("per_seed"), list) and fit["per_seed"]:
        fit = fit["per_seed"][0] or {}  # a row over seeds: every seed trains alike
    for k in FIT_CHOICES:
        v = fit.get(k) if isinstance(fit, dict) else None
        if _unset(v):
            continue
        param = k.removesuffix("_used")
        if flat.get(param) == v:  # e.g. train_steps trained = train_steps asked: nothing new
            continue
        flat[f"fit.{k}" if k in flat else k] = v
    flat.setdefault("split", r.split)
    flat.setdefault("seed", r.seed)
    return {k: text(v) for k, v in flat.items()}


def differing(identities: Sequence[dict[str, str]]) -> list[str]:
    """Keys whose value (or presence) is not the same in every identity, sorted."""
    keys = set().union(*identities) if identities else set()
    return sorted(k for k in keys if len({i.get(k, _ABSENT) for i in identities}) > 1)


def shared(identities: Sequence[dict[str, str]]) -> dict[str, str]:
    """Keys with one value in every identity (the label's head excluded), sorted."""
    if not identities:
        return {}
    first = identities[0]
    return {k: first[k] for k in sorted(first)
            if k not in HEAD and all(i.get(k, _ABSENT) == first[k] for i in identities)}


def short(value: str) -> str:
    """``value``, or when longer than MAX_VALUE a part of it and 8 hex of its SHA-256: the
    end of a path (its file name says most), the start of anything else."""
    if len(value) <= MAX_VALUE:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    keep = MAX_VALUE - 10
    if "/" in value:
        return f"…{value[-keep:]}#{digest}"
    return f"{value[:keep]}…#{digest}"


def label(ident: dict[str, str], keys: Sequence[str]) -> str:
    """``conv4 geodesic; checkpoint=runs/x.pt, metric_options.m=128`` for the ``keys`` shown."""
    head = " ".join(ident[k] for k in HEAD if k in ident)
    pairs = [f"{k}={short(ident[k])}" for k in ALWAYS if k in ident]
    pairs += [f"{k}={short(ident[k])}" for k in keys
              if k in ident and k not in HEAD and k not in ALWAYS]
    return "; ".join(p for p in (head, ", ".join(pairs)) if p)


def labels(records: Sequence[ResultRecord]) -> list[str]:
    """One label per record, telling each apart from the others of ``records``."""
    ids = [identity(r) for r in records]
    keys = differing(ids)
    return [label(i, keys) for i in ids]
