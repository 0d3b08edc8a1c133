"""Paired comparison of two methods (or labelled variants) on a board.

``compare_board(store, board, "protonet[metric=geodesic]", "ncm")`` pairs A's and B's
measurements unit by unit, per setting:

* few-shot rows with ``samples``: per-episode accuracies on the same episodes (same
  manifest hash), concatenated over every manifest both have; when one side holds several
  seeds on one manifest (a dataset's fixed episodes), an episode's value is its mean over
  those seeds, so every episode is one pair;
* every other row (continual, OOD, few-shot rows without samples): one pair per seed
  measured on the same stream or episodes (``per_seed`` entries, or single-seed rows
  matched by seed and manifest/stream hash).

A *variant* is ``method`` or ``method[key=value,...]`` with keys of the row's identity
(:func:`protobench.leaderboard.labels.identity`: ``metric=geodesic``,
``metric_options.m=128``); the rows it matches in a setting must be one configuration
over seeds (:func:`protobench.leaderboard.aggregate.group_key`). A comparison reports the
mean of A and of B over the pairs, the mean difference A - B with its Student-t 95% CI,
the paired t-test and Wilcoxon signed-rank (zero differences dropped) p-values, the win
rate and a verdict (significant at 5% by the paired t-test, which agrees with the CI).
Unpaired comparisons (no shared episodes, stream or seed; A or B missing; an ambiguous
variant) are refused with a :class:`~protobench.errors.UserError` naming why.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from rich.markup import escape
from rich.table import Table
from scipy import stats

from protobench.errors import UserError
from protobench.leaderboard.aggregate import group_key, seed_free
from protobench.leaderboard.labels import differing, identity, text
from protobench.leaderboard.render import setting_text
from protobench.tasks.record import ResultRecord, episode_samples
from protobench.tasks.store import ResultStore

#: metrics where lower is better (a substring of the name)
LOWER_IS_BETTER = ("forgetting", "fpr")
ALPHA = 0.05
_VARIANT = re.compile(r"^\s*([^\[\]\s]+)\s*(?:\[(.*)\])?\s*$")


@dataclass(frozen=True)
class Variant:
    """``method`` or ``method[key=value,...]``: rows of that method (``record.method`` or
    ``method_name``) whose identity has every ``key=value`` (``key=``: not set)."""

    text: str
    method: str
    params: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, spec: str) -> Variant:
        m = _VARIANT.match(spec)
        if m is None:
            raise UserError(f"{spec!r} is not a method or method[key=value,...]")
        params = []
        for item in re.split(r",(?=\s*[\w.\-]+\s*=)", m.group(2) or ""):
            if not item.strip():
                continue
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise UserError(f"{spec!r}: expected key=value inside [...], got {item!r}")
            params.append((key.strip().replace("-", "_"), value.strip()))
        return cls(spec.strip(), m.group(1), tuple(params))

    def names(self, r: ResultRecord) -> bool:
        return self.method in (r.method, r.method_name)

    def matches(self, r: ResultRecord) -> bool:
        if not self.names(r):
            return False
        ident = identity(r)
        return all(_same(ident.get(k), v) for k, v in self.params)


def _same(have: str | None, want: str) -> bool:
    """``want`` as typed (``geodesic``, ``0.1``, ``true``) against an identity text; an empty
    ``want`` (``key=``) matches a row that does not set ``key`` (its default applies)."""
    if have is None:
        return want == ""
    if have == want:
        return True
    try:
        return have == text(json.loads(want))
    except ValueError:
        return False


@dataclass(frozen=True)
class Comparison:
    """A against B in one setting: ``a_values[i]`` and ``b_values[i]`` are the i-th pair."""

    board: str
    setting: str
    a: str
    b: str
    metric: str
    unit: str  # "episodes" or "seeds"
    a_values: tuple[float, ...]
    b_values: tuple[float, ...]
    mean_a: float
    mean_b: float
    diff: float  # mean of A - B
    ci_low: float  # Student-t 95% CI of the mean difference (NaN for one pair)
    ci_high: float
    t_p: float  # paired t-test (NaN for one pair)
    wilcoxon_p: float
    wins: int  # pairs where A is better (A > B, or A < B for a lower-is-better metric)
    ties: int
    losses: int
    higher_is_better: bool
    paired_on: str  # what was paired: "2 manifests", "seeds 0, 1, 2"
    a_rows: tuple[int | None, ...] = ()
    b_rows: tuple[int | None, ...] = ()

    @property
    def n(self) -> int:
        return len(self.a_values)

    @property
    def win_rate(self) -> float:
        return self.wins / self.n

    @property
    def verdict(self) -> str:
        pairs = f"paired on {self.n} {self.unit[:-1] if self.n == 1 else self.unit}"
        if self.n < 2:
            return (f"too few pairs for a test ({pairs}): {self.a} - {self.b} = "
                    f"{_pts(self.diff, True)} points")
        if self.ties == self.n:
            return f"no difference: {self.a} and {self.b} are equal on all {self.n} {self.unit}"
        ci = f"95% CI {_pts(self.ci_low)} to {_pts(self.ci_high)}"
        disagree = ""
        if (self.wilcoxon_p < ALPHA) != (self.t_p < ALPHA):
            disagree = f"; the Wilcoxon test disagrees ({_p(self.wilcoxon_p)})"
            if 2.0 ** (1 - self.n) >= ALPHA:  # its smallest two-sided p with n pairs
                disagree += f", it cannot reach p < {ALPHA} with {self.n} pairs"
        if self.t_p >= ALPHA:
            return (f"no significant difference between {self.a} and {self.b} ({self.a} - "
                    f"{self.b} = {_pts(self.diff, True)} points, {ci}, {_p(self.t_p)}, "
                    f"{pairs}){disagree}")
        gain = self.diff if self.higher_is_better else -self.diff
        lo, hi = ((self.ci_low, self.ci_high) if self.diff > 0 else
                  (-self.ci_high, -self.ci_low))
        better, worse = (self.a, self.b) if gain > 0 else (self.b, self.a)
        lower = "" if self.higher_is_better else f" (lower {self.metric})"
        return (f"{better} is better than {worse}{lower} by {_pts(abs(self.diff))} points "
                f"(95% CI {_pts(lo)} to {_pts(hi)}, {_p(self.t_p)}, {pairs}){disagree}")

    def cells(self) -> list[str]:
        ci = (f"{_pts(self.diff, True)} ({_pts(self.ci_low)} to {_pts(self.ci_high)})"
              if self.n > 1 else _pts(self.diff, True))
        on = self.paired_on.removeprefix("seeds ").removeprefix("seed ")
        return [self.setting, f"{self.n} {self.unit} ({on})", f"{100 * self.mean_a:.2f}",
                f"{100 * self.mean_b:.2f}", ci, _p(self.t_p, bare=True),
                _p(self.wilcoxon_p, bare=True),
                f"{self.wins} / {self.ties} / {self.losses} ({100 * self.win_rate:.0f}%)"]


@dataclass(frozen=True)
class Report:
    """Every setting's comparison, and the settings skipped with the reason."""

    board: str
    a: str
    b: str
    metric: str
    comparisons: list[Comparison]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def table(self) -> Table:
        t = Table(title=escape(f"{self.board}: {self.a} (A) vs {self.b} (B), {self.metric}"))
        for col in ("setting", "paired on", "A %", "B %", "A - B points (95% CI)",
                    "paired t p", "Wilcoxon p", "A wins / ties / B wins"):
            t.add_column(col, overflow="fold")
        for c in self.comparisons:
            t.add_row(*map(escape, c.cells()))
        return t

    def lines(self) -> list[str]:
        out = [f"{c.setting}: {c.verdict}" for c in self.comparisons]
        out += [f"{s}: skipped, {why}" for s, why in self.skipped]
        return out


def _pts(x: float, sign: bool = False) -> str:
    return f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}"


def _p(p: float, bare: bool = False) -> str:
    if math.isnan(p):
        return "n/a" if bare else "p n/a"
    if p < 0.001:
        return "< 0.001" if bare else "p < 0.001"
    s = f"{p:.3f}" if p < 0.01 else f"{p:.2f}"
    return s if bare else f"p = {s}"


def paired(board: str, setting: str, a: str, b: str, metric: str, unit: str,
           x: np.ndarray, y: np.ndarray, paired_on: str,
           a_rows: tuple[int | None, ...] = (), b_rows: tuple[int | None, ...] = ()
           ) -> Comparison:
    """The statistics of the pairs ``(x[i], y[i])`` (A, B)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    d = x - y
    n = len(d)
    higher = not any(w in metric for w in LOWER_IS_BETTER)
    lo = hi = t_p = w_p = math.nan
    if n >= 2:
        sd = float(d.std(ddof=1))
        half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        lo, hi = float(d.mean()) - half, float(d.mean()) + half
        if not d.any():  # identical everywhere: nothing to test
            t_p = w_p = 1.0
        else:
            with warnings.catch_warnings():  # ties and zeros: scipy's normal approximation
                warnings.simplefilter("ignore")
                t_p = 0.0 if sd == 0 else float(stats.ttest_rel(x, y).pvalue)
                w_p = float(stats.wilcoxon(x, y).pvalue)
    wins, ties = int((d > 0 if higher else d < 0).sum()), int((d == 0).sum())
    return Comparison(board=board, setting=setting, a=a, b=b, metric=metric, unit=unit,
                      a_values=tuple(x.tolist()), b_values=tuple(y.tolist()),
                      mean_a=float(x.mean()), mean_b=float(y.mean()), diff=float(d.mean()),
                      ci_low=lo, ci_high=hi, t_p=t_p, wilcoxon_p=w_p, wins=wins, ties=ties,
                      losses=n - ties - wins, higher_is_better=higher, paired_on=paired_on,
                      a_rows=a_rows, b_rows=b_rows)


def _episodes(rows: Sequence[ResultRecord]) -> dict[str, dict[int, list[float]]]:
    """``manifest hash -> {seed: per-episode values}`` of rows with samples (oldest first:
    a later row's seed wins)."""
    out: dict[str, dict[int, list[float]]] = {}
    for r in rows:
        seed_of = {p.get("manifest_hash"): int(p["seed"]) for p in r.per_seed}
        for key, values in episode_samples(r.samples).items():
            h, _, s = key.partition("#seed")
            out.setdefault(h, {})[int(s) if s else seed_of.get(h, r.seed)] = values
    return out


def _seeds(rows: Sequence[ResultRecord], metric: str) -> dict[tuple[int, str], float]:
    """``(seed, manifest or stream hash) -> value`` (oldest first: a later row wins)."""
    out: dict[tuple[int, str], float] = {}
    for r in rows:
        if r.per_seed:
            for p in r.per_seed:
                if metric in p.get("metrics", {}):
                    out[(int(p["seed"]), p.get("manifest_hash", ""))] = float(
                        p["metrics"][metric]["value"])
        elif metric in r.metrics:
            out[(r.seed, r.manifest_hash)] = r.metrics[metric].value
    return out


def _short(h: str) -> str:
    return h[:12] or "none"


def _pair(board: str, setting: str, a: Variant, b: Variant, metric: str,
          ra: list[ResultRecord], rb: list[ResultRecord]) -> Comparison:
    """A's rows ``ra`` against B's rows ``rb`` of one setting (see the module docstring)."""
    ids = (tuple(r.id for r in ra), tuple(r.id for r in rb))
    samples = all(episode_samples(r.samples) for r in ra + rb) and all(
        metric == r.primary_metric for r in ra + rb)
    if samples:
        ea, eb = _episodes(ra), _episodes(rb)
        shared = [h for h in ea if h in eb]
        if not shared:
            raise UserError(
                f"{a.text} and {b.text} share no episodes (manifests {a.text}: "
                f"{', '.join(map(_short, ea))}; {b.text}: {', '.join(map(_short, eb))}): not a "
                "paired comparison; run both on the same episodes (same --seed, --episodes, "
                "data options, or --episodes-file)")
        xs, ys = [], []
        for h in shared:
            x = np.mean([np.asarray(v) for v in ea[h].values()], axis=0)
            y = np.mean([np.asarray(v) for v in eb[h].values()], axis=0)
            if x.shape != y.shape:
                raise UserError(f"manifest {_short(h)} holds {len(x)} episodes for {a.text} "
                                f"and {len(y)} for {b.text}: the store is inconsistent")
            xs.append(x)
            ys.append(y)
        on = f"{len(shared)} manifest{'s' if len(shared) > 1 else ''}"
        if len(shared) < max(len(ea), len(eb)):  # some of A's or B's episodes are unpaired
            on += f"; A has {len(ea)}, B {len(eb)}"
        return paired(board, setting, a.text, b.text, metric, "episodes",
                      np.concatenate(xs), np.concatenate(ys), on, *ids)
    sa, sb = _seeds(ra, metric), _seeds(rb, metric)
    keys = sorted(k for k in sa if k in sb)
    if not keys:
        common = sorted({s for s, _ in sa} & {s for s, _ in sb})
        seeds_a = ", ".join(str(s) for s in sorted({s for s, _ in sa})) or "none"
        seeds_b = ", ".join(str(s) for s in sorted({s for s, _ in sb})) or "none"
        if common:
            s = common[0]
            why = (f"the same seeds ({', '.join(map(str, common))}) but not the same stream or "
                   f"episodes (seed {s}: {a.text} "
                   f"{', '.join(_short(h) for t, h in sa if t == s)}, {b.text} "
                   f"{', '.join(_short(h) for t, h in sb if t == s)})")
        else:
            why = f"no seed in common ({a.text}: seeds {seeds_a}; {b.text}: seeds {seeds_b})"
        raise UserError(f"{a.text} and {b.text} have {why}: not a paired comparison; run "
                        "both with the same --seeds and data options")
    on = ("seeds " if len(keys) > 1 else "seed ") + ", ".join(str(s) for s, _ in keys)
    return paired(board, setting, a.text, b.text, metric, "seeds",
                  np.array([sa[k] for k in keys]), np.array([sb[k] for k in keys]), on, *ids)


def _one_group(v: Variant, rows: list[ResultRecord]) -> list[ResultRecord]:
    """The rows of ``v`` in a setting, which must be one configuration over seeds."""
    groups: dict[str, list[ResultRecord]] = {}
    for r in rows:
        groups.setdefault(group_key(r), []).append(r)
    if len(groups) == 1:
        return rows
    last = [g[-1] for g in groups.values()]
    idents = [seed_free(r) for r in last]
    if len({r.method for r in last}) == len(last):  # e.g. ce+msp, ce+knn
        names = sorted(r.method for r in last)
    else:
        keys = differing(idents)
        names = sorted({r.method + ("[" + ",".join(f"{k}={i[k]}" for k in keys if k in i) + "]"
                                    if any(k in i for k in keys) else "")
                        for r, i in zip(last, idents)})
    raise UserError(f"{v.text} is ambiguous: it matches {len(groups)} configurations "
                    f"({'; '.join(names)}); name one, e.g. {names[0]}")


def _matching_setting(r: ResultRecord, wanted: dict[str, object]) -> bool:
    return all(k in r.setting and text(r.setting[k]) == text(v) for k, v in wanted.items())


def compare_rows(records: Sequence[ResultRecord], a: str, b: str,
                 settings: dict[str, object] | None = None, metric: str | None = None,
                 board: str = "") -> Report:
    """Compare variants ``a`` and ``b`` (``method`` or ``method[key=value,...]``) over the
    ``records`` of one board, one comparison per setting (those matching ``settings``,
    ``{"shots": 1}``); ``metric`` defaults to the rows' primary metric. Raises
    :class:`UserError` when no setting can be paired (the reasons named); settings where
    only some fail are in ``Report.skipped``."""
    va, vb = Variant.parse(a), Variant.parse(b)
    board = board or (records[0].board if records else "")
    for v in (va, vb):
        named = [r for r in records if v.names(r)]
        if not named:
            methods = sorted({r.method for r in records})
            raise UserError(f"no rows of {v.method!r} on {board}; methods there: "
                            f"{', '.join(methods) or 'none'}")
        if not any(v.matches(r) for r in named):
            have = {k: sorted({identity(r).get(k, "(unset)") for r in named})
                    for k, _ in v.params}
            raise UserError(f"no row of {v.method} matches {v.text}; its values there: "
                            + "; ".join(f"{k}: {', '.join(vals)}" for k, vals in have.items()))
    rows = [r for r in records if _matching_setting(r, settings or {})]
    if not rows:
        found = sorted({setting_text(r.setting) for r in records})
        asked = ", ".join(f"{k}={text(v)}" for k, v in (settings or {}).items())
        raise UserError(f"no setting of {board} has {asked}; settings: "
                        f"{', '.join(found)}")
    metric = metric or rows[-1].primary_metric
    if not any(metric in r.metrics for r in rows):
        names = sorted({k for r in rows for k in r.metrics})
        raise UserError(f"the rows of {board} have no metric {metric!r}; metrics: "
                        f"{', '.join(names)}")
    by_setting: dict[str, list[ResultRecord]] = {}
    for r in rows:
        by_setting.setdefault(setting_text(r.setting), []).append(r)
    done, skipped = [], []
    for setting in sorted(by_setting):
        members = by_setting[setting]
        ra = [r for r in members if va.matches(r)]
        rb = [r for r in members if vb.matches(r)]
        if not ra and not rb:
            continue
        try:
            for v, got in ((va, ra), (vb, rb)):
                if not got:
                    raise UserError(f"no rows of {v.text} in this setting")
            ra, rb = _one_group(va, ra), _one_group(vb, rb)
            if group_key(ra[0]) == group_key(rb[0]):
                raise UserError(f"{va.text} and {vb.text} name the same rows")
            done.append(_pair(board, setting, va, vb, metric, ra, rb))
        except UserError as exc:
            skipped.append((setting, str(exc)))
    if not done:
        reasons = "; ".join(f"{s}: {why}" for s, why in skipped)
        raise UserError(f"cannot compare {va.text} with {vb.text} on {board}: {reasons}")
    return Report(board, va.text, vb.text, metric, done, skipped)


def compare_board(store: ResultStore, board: str, a: str, b: str,
                  settings: dict[str, object] | None = None, metric: str | None = None
                  ) -> Report:
    """:func:`compare_rows` on ``board`` of ``store``, loading the samples of A's and B's
    rows only."""
    boards = store.boards()
    if board not in boards:
        raise UserError(f"no board {board!r} in {store.path}; boards: "
                        f"{', '.join(boards) or 'none'}")
    va, vb = Variant.parse(a), Variant.parse(b)
    records = store.records(board)
    wanted = [r.id for r in records if (va.names(r) or vb.names(r)) and r.id is not None]
    found = store.samples(wanted)
    records = [replace(r, samples=found[r.id]) if r.id in found else r for r in records]
    return compare_rows(records, a, b, settings, metric, board)


def compare_groups(board: str, setting: str, a: str, b: str, metric: str,
                   ra: list[ResultRecord], rb: list[ResultRecord]) -> Comparison:
    """Pair the rows ``ra`` of one configuration (labelled ``a``) with the rows ``rb`` of
    another (``b``) in ``setting``, as :func:`compare_rows` does for variants; the rows
    must carry their samples. Raises :class:`UserError` when they cannot be paired."""
    return _pair(board, setting, Variant(a, ra[0].method), Variant(b, rb[0].method), metric,
                 ra, rb)
