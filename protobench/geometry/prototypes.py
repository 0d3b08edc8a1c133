"""`Prototypes`: class prototypes, their running statistics and the one search path.

Every method, evaluator and OOD score that compares queries with class prototypes holds a
:class:`Prototypes`: ``vectors [..., C, M, D]`` (``M`` prototypes per class), ``counts
[..., C, M]``, ``labels [C]`` and optionally a covariance ``cov`` (``[D, D]`` shared or
``[C, D, D]`` per class). Scores are ``[..., Q, C]``, higher = closer, the max over a class's
``M`` prototypes (its nearest prototype). It lives in ``geometry`` (REDESIGN step 1 puts it
at the package root) so that the index, metrics and geodesic heads it uses sit below it and
every layer above can import it.

Numerics are those of the code it replaced, so no result moves by a bit: feature means
accumulate in float64 by ``index_add_`` (row order, across ``update`` calls) and are stored
in the features' dtype; support means (``from_support``) are the plain ``mean`` over the
shots; ``scores(..., ranking=True)`` is the metric's ranking form (the episode evaluator's);
``backend=`` scores through the cached :class:`~protobench.geometry.index.PrototypeIndex`
(FAISS or torch, the continual methods'). Covariances are 1/n (sklearn's
``EmpiricalCovariance``, as OpenOOD) of the deviations from each row's own prototype,
merged with Chan et al.'s pairwise update (:mod:`~protobench.geometry.prototype_stats`).
``merge`` combines slot by slot: for ``M = 1`` merging two halves equals fitting the whole;
for ``M > 1`` only when both sides put rows in the same slots (``update(..., slots=)``).
A slot without rows keeps its vector (zeros for a class never seen).

The index is built on first use per (metric, backend, device, options) and rebuilt only
after the prototypes change: ``update``, ``merge``, assigning a field (the ``version``
counter) or an in-place write to ``vectors`` (torch's version counter, shared by views).
A scoring strategy that needs more than the means (the geodesic heads) is handed the
object (``scores(q, "geodesic", head=...)``, :class:`PrototypeScorer`); ``from_support``
keeps the support rows for it. Without a head, ``"geodesic"`` is the registered metric:
squared euclidean on inputs that already are diffusion coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from protobench.errors import UserError
from protobench.geometry.diffusion import sq_dists
from protobench.geometry.index import PrototypeIndex
from protobench.geometry.metrics import get_metric, get_ranker
from protobench.geometry.prototype_stats import chan_merge, kmeans, sq_mahalanobis, within_scatter

COVARIANCES = ("shared", "class")
_FIELDS = frozenset({"vectors", "counts", "labels", "cov", "support"})


class PrototypeScorer(Protocol):
    """A scoring strategy: scores ``[..., Q, C]`` of ``queries`` against ``protos``."""

    def prototype_scores(self, protos: Prototypes, queries: torch.Tensor) -> torch.Tensor: ...


@dataclass(eq=False)
class Prototypes:
    """Prototypes ``vectors [..., C, M, D]`` with ``counts [..., C, M]`` and class ``labels [C]``."""

    vectors: torch.Tensor
    counts: torch.Tensor
    labels: torch.Tensor
    cov: torch.Tensor | None = None  # tracked by update/merge when built with cov=...
    support: torch.Tensor | None = None  # [..., C, K, D] rows of from_support (strategies)
    version: int = field(default=0, init=False)
    _sums: torch.Tensor | None = field(default=None, init=False, repr=False)  # float64
    _scatter: torch.Tensor | None = field(default=None, init=False, repr=False)
    _cache: dict[Any, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        v = self.vectors
        if v.dim() < 3 or tuple(self.counts.shape) != tuple(v.shape[:-1]):
            raise UserError(f"prototypes need vectors [..., C, M, D] and counts [..., C, M], "
                            f"got {list(v.shape)} and {list(self.counts.shape)}")
        if self.labels.dim() != 1 or len(self.labels) != v.shape[-3]:
            raise UserError(f"labels must be [C] = [{v.shape[-3]}], got {list(self.labels.shape)}")
        if self.cov is not None:
            self._check_cov(self.cov)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name in _FIELDS and "_cache" in self.__dict__:  # assignment after construction
            if name in ("vectors", "counts"):
                object.__setattr__(self, "_sums", None)  # re-derived from vectors x counts
            self._changed()

    def __getstate__(self) -> dict[str, Any]:  # pickle / deepcopy: indexes are rebuilt
        return {**self.__dict__, "_cache": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # -- constructors ---------------------------------------------------------------------
    @classmethod
    def empty(cls, labels: torch.Tensor | int, dim: int, per_class: int = 1,
              cov: str | None = None, dtype: torch.dtype = torch.float32,
              device: torch.device | str | None = None) -> Prototypes:
        """No rows yet (torchmetrics' reset state): ``labels`` (or ``C`` for ``0..C-1``),
        ``per_class`` slots of dimension ``dim``, tracking a ``shared``/``class`` covariance."""
        labels = _labels(labels, device)
        c = len(labels)
        p = cls(torch.zeros(c, per_class, dim, dtype=dtype, device=device),
                torch.zeros(c, per_class, dtype=torch.int64, device=device), labels)
        if cov is not None:
            if cov not in COVARIANCES:
                raise UserError(f"cov={cov!r}; choose one of {', '.join(COVARIANCES)} or None")
            shape = (dim, dim) if cov == "shared" else (c, dim, dim)
            p._scatter = torch.zeros(shape, dtype=torch.float64, device=device)
            p.cov = p._scatter.clone()
        p._sums = torch.zeros(c, per_class, dim, dtype=torch.float64, device=device)
        return p

    @classmethod
    def from_features(cls, x: torch.Tensor, y: torch.Tensor, per_class: int = 1, *,
                      labels: torch.Tensor | int | None = None, cov: str | None = None,
                      seed: int = 0, iters: int = 20) -> Prototypes:
        """Class means of ``x [n, D]`` with labels ``y [n]`` (classes ``labels``, default
        ``0..max(y)``); ``per_class > 1``: seeded Lloyd k-means within each class."""
        _check_rows(x, y)
        labels = int(y.max()) + 1 if labels is None else labels
        p = cls.empty(labels, x.shape[1], per_class, cov, x.dtype, x.device)
        if per_class == 1:
            return p.update(x, y)
        rows = p._rows(y)
        slots = torch.zeros_like(y)
        g = torch.Generator().manual_seed(seed)
        for c in range(len(p.labels)):
            members = torch.nonzero(rows == c).squeeze(1)
            if len(members):
                slots[members], centres = kmeans(x[members].double(), per_class, g, iters)
                p.vectors[c] = centres.to(x.dtype)  # what a slot left without rows keeps
        return p.update(x, y, slots)

    @classmethod
    def from_support(cls, support: torch.Tensor, normalise: bool = False,
                     labels: torch.Tensor | None = None) -> Prototypes:
        """Episode prototypes of ``support [..., N, K, D]`` (batched over episodes): the mean
        over the ``K`` shots; ``normalise``: of L2-normalised rows, renormalised."""
        if support.dim() < 3:
            raise UserError(f"support must be [..., N, K, D], got {list(support.shape)}")
        if normalise:
            vectors = F.normalize(F.normalize(support, dim=-1).mean(-2, keepdim=True), dim=-1)
        else:
            vectors = support.mean(dim=-2, keepdim=True)
        counts = torch.full(vectors.shape[:-1], support.shape[-2], dtype=torch.int64,
                            device=support.device)
        labels = _labels(support.shape[-3] if labels is None else labels, support.device)
        return cls(vectors, counts, labels, support=support)

    @classmethod
    def from_vectors(cls, vectors: torch.Tensor, labels: torch.Tensor | int | None = None,
                     counts: torch.Tensor | None = None) -> Prototypes:
        """Wrap learnable or externally held vectors (no copy, gradients kept): ``[C, D]`` (one
        per class) or ``[..., C, M, D]``; ``counts`` default 1 per prototype."""
        if vectors.dim() == 2:
            vectors = vectors.unsqueeze(-2)
        if vectors.dim() < 3:
            raise UserError(f"vectors must be [C, D] or [..., C, M, D], got {list(vectors.shape)}")
        if counts is None:
            counts = torch.ones(vectors.shape[:-1], dtype=torch.int64, device=vectors.device)
        labels = _labels(vectors.shape[-3] if labels is None else labels, vectors.device)
        return cls(vectors, counts.reshape(vectors.shape[:-1]).to(torch.int64), labels)

    # -- shape ----------------------------------------------------------------------------
    @property
    def per_class(self) -> int:
        return self.vectors.shape[-2]

    @property
    def dim(self) -> int:
        return self.vectors.shape[-1]

    def __len__(self) -> int:
        return self.vectors.shape[-3]

    @property
    def centres(self) -> torch.Tensor:
        """``[..., C, D]``: the one prototype of each class (``M = 1``; a view)."""
        if self.per_class != 1:
            raise UserError(f"centres needs one prototype per class, these have {self.per_class}")
        return self.vectors[..., 0, :]

    @property
    def row_labels(self) -> torch.Tensor:
        """``[C*M]`` class of each flattened prototype row (row ``c*M + m``)."""
        return self.labels.repeat_interleave(self.per_class)

    # -- running statistics ---------------------------------------------------------------
    def update(self, x: torch.Tensor, y: torch.Tensor,
               slots: torch.Tensor | None = None) -> Prototypes:
        """Add rows ``x [n, D]`` of classes ``y [n]`` (in place; returns self). ``slots [n]``
        picks each row's prototype; by default the nearest of its class (``M > 1``)."""
        self._check_flat("update")
        _check_rows(x, y)
        rows = self._rows(y)
        m = self.per_class
        if slots is None:
            slots = self._nearest_slot(x, rows) if m > 1 else torch.zeros_like(rows)
        flat = rows * m + slots
        xd = x.double()
        add = torch.bincount(flat, minlength=len(self) * m).view_as(self.counts)
        if self._scatter is not None:  # batch scatter about its own means, then Chan's merge
            own = torch.zeros(len(self) * m, self.dim, dtype=torch.float64, device=x.device)
            own = own.index_add_(0, flat, xd) / add.clamp(min=1).reshape(-1, 1).to(xd)
            centred = xd - own[flat]
            batch = within_scatter(centred, rows, len(self) if self._scatter.dim() == 3 else None)
            self._scatter = chan_merge(self._scatter, self.counts, self._means64(), batch, add,
                                       own.view_as(self._sums64()))
        sums = self._sums64()
        sums.view(-1, self.dim).index_add_(0, flat, xd)  # running float64 sums, in row order
        self._set(sums, self.counts + add)
        return self

    def merge(self, other: Prototypes) -> Prototypes:
        """Add the state of ``other`` (same labels and shape), in place; returns self."""
        if not torch.equal(self.labels.cpu(), other.labels.cpu()) or \
                self.vectors.shape != other.vectors.shape:
            raise UserError("merge needs prototypes with the same labels and shape")
        if (self._scatter is None) != (other._scatter is None) or (
                self._scatter is not None and other._scatter is not None
                and self._scatter.shape != other._scatter.shape):
            raise UserError("merge needs both sides to track the same covariance")
        if self._scatter is not None and other._scatter is not None:
            self._scatter = chan_merge(self._scatter, self.counts, self._means64(),
                                       other._scatter, other.counts, other._means64())
        self._set(self._sums64() + other._sums64(), self.counts + other.counts.to(self.counts))
        return self

    def _set(self, sums: torch.Tensor, counts: torch.Tensor) -> None:
        means = (sums / counts.clamp(min=1).to(sums)[..., None]).to(self.vectors.dtype)
        object.__setattr__(self, "_sums", sums)
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "vectors",  # a slot without rows keeps its vector
                           torch.where((counts > 0)[..., None], means, self.vectors.detach()))
        object.__setattr__(self, "support", None)
        if self._scatter is not None:
            object.__setattr__(self, "cov", self._scatter / self._cov_counts())
        self._changed()

    def _sums64(self) -> torch.Tensor:
        if self._sums is None:
            counts = self.counts.to(torch.float64)[..., None]
            self._sums = (self.vectors.detach().double() * counts).contiguous()
        return self._sums

    def _means64(self) -> torch.Tensor:
        return self._sums64() / self.counts.clamp(min=1).to(torch.float64)[..., None]

    def _cov_counts(self) -> torch.Tensor | int:
        if self._scatter is not None and self._scatter.dim() == 3:  # per class
            return self.counts.sum(-1).clamp(min=1).to(torch.float64)[:, None, None]
        return max(1, int(self.counts.sum()))

    # -- scores and search ----------------------------------------------------------------
    def scores(self, queries: torch.Tensor, metric: str = "sqeuclidean", *,
               head: PrototypeScorer | None = None, ranking: bool = False,
               backend: str | None = None) -> torch.Tensor:
        """``queries [..., Q, D]`` -> ``[..., Q, C]``, higher = closer (``-distance``), max over
        each class's ``M`` prototypes. ``head``: a strategy scores instead (the geodesic
        heads); ``ranking``: the metric's ranking form (same argmax, also after the max over
        ``M``: a per-query increasing function of ``-distance``); ``backend``: through
        the cached index (``auto``, ``torch``, ``faiss-cpu``, ``faiss-gpu``); ``metric=
        "mahalanobis"`` needs ``cov``."""
        if head is not None:
            return head.prototype_scores(self, queries)
        if metric == "mahalanobis":
            flat = -self._mahalanobis(queries)
        elif backend is not None:
            if ranking:
                raise UserError("ranking scores come from the torch metric, not an index")
            index = self.index(metric, backend, device=queries.device)
            dist, ids = index.search(queries, k=len(index))
            flat = torch.empty(len(queries), len(index), device=dist.device)
            flat.scatter_(1, ids.long(), -dist.float())
        else:
            p = self.vectors.flatten(-3, -2)
            flat = get_ranker(metric)(queries, p) if ranking else -get_metric(metric)(queries, p)
        if self.per_class == 1:
            return flat
        return flat.unflatten(-1, (len(self), self.per_class)).amax(-1)

    def index(self, metric: str = "sqeuclidean", backend: str = "auto",
              device: torch.device | str | None = None, **options: Any) -> PrototypeIndex:
        """The :class:`PrototypeIndex` over the ``C*M`` prototype rows (labels: their classes),
        cached until the prototypes change; ``options`` go to the index (``approximate``...)."""
        self._check_flat("index")
        device = torch.device(device) if device is not None else self.vectors.device
        key = (metric, backend, str(device), tuple(sorted(options.items())))
        stamp = (self.version, _tensor_version(self.vectors))
        held = self._cache.get(key)
        if held is None or held[0] != stamp:
            rows = self.vectors.detach().flatten(0, 1).to(device)
            held = (stamp, PrototypeIndex(rows, self.row_labels, metric=metric, backend=backend,
                                          **options))
            self._cache[key] = held
        return held[1]

    def search(self, queries: torch.Tensor, metric: str = "sqeuclidean", k: int = 1,
               backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
        """``(distances [Q, k], rows [Q, k])`` of the ``k`` nearest prototype rows
        (row ``c*M + m``; ``row_labels[rows]`` are their classes), through the cached index."""
        return self.index(metric, backend, device=queries.device).search(queries, k)

    def predict(self, queries: torch.Tensor, metric: str = "sqeuclidean",
                backend: str = "auto", head: PrototypeScorer | None = None) -> torch.Tensor:
        """``[..., Q]`` label of the nearest class: through the cached index, or the argmax
        of :meth:`scores` (strategies, mahalanobis, batched prototypes)."""
        if head is not None or metric == "mahalanobis" or self.vectors.dim() > 3:
            s = self.scores(queries, metric, head=head)
            return self.labels.to(s.device)[s.argmax(-1)]
        return self.index(metric, backend, device=queries.device).predict(queries)

    def precision(self) -> torch.Tensor:
        """``pinv(cov)`` (float64, hermitian), computed once per change of the prototypes."""
        if self.cov is None:
            raise UserError("mahalanobis scores need a covariance: build the prototypes with "
                            "cov='shared' or cov='class'")
        key = ("precision", self.version)
        if key not in self._cache:
            self._cache[key] = torch.linalg.pinv(self.cov.double(), hermitian=True)
        return self._cache[key]

    def _mahalanobis(self, queries: torch.Tensor) -> torch.Tensor:
        self._check_flat("mahalanobis scores")
        p = self.precision()
        return sq_mahalanobis(queries.to(p), self.vectors.flatten(0, 1).to(p), p,
                              self.per_class)

    # -- helpers --------------------------------------------------------------------------
    def _changed(self) -> None:
        object.__setattr__(self, "version", self.version + 1)
        self._cache.clear()

    def _check_flat(self, what: str) -> None:
        if self.vectors.dim() != 3:
            raise UserError(f"{what} works on unbatched prototypes [C, M, D], got "
                            f"{list(self.vectors.shape)}")

    def _check_cov(self, cov: torch.Tensor) -> None:
        d = self.dim
        if tuple(cov.shape) not in ((d, d), (len(self), d, d)) or self.vectors.dim() != 3:
            raise UserError(f"cov must be [D, D] or [C, D, D] for unbatched prototypes, got "
                            f"{list(cov.shape)}")

    def _rows(self, y: torch.Tensor) -> torch.Tensor:
        """Row of each label of ``y`` in ``labels`` (a UserError for unknown labels)."""
        labels = self.labels.to(y.device)
        if len(labels):
            order = torch.argsort(labels)
            rows = order[torch.searchsorted(labels[order], y).clamp(max=len(labels) - 1)]
            if bool((labels[rows] == y).all()):
                return rows
        raise UserError("rows with labels outside the prototypes' classes")

    def _nearest_slot(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Online k-means: the nearest prototype of each row's class (ties: the first)."""
        own = self.vectors.detach().double()[rows]  # [n, M, D]
        return sq_dists(x.double().unsqueeze(1), own).squeeze(1).argmin(-1)


def _labels(labels: torch.Tensor | int, device: torch.device | str | None) -> torch.Tensor:
    """``0..C-1`` for an int; given labels are checked distinct."""
    if isinstance(labels, int):
        return torch.arange(labels, device=device)
    labels = torch.as_tensor(labels, dtype=torch.int64, device=device)
    if labels.dim() != 1 or len(torch.unique(labels)) != len(labels):
        raise UserError(f"prototype labels must be distinct, one per class, got {labels.tolist()}")
    return labels


def _check_rows(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.dim() != 2 or y.shape != (len(x),):
        raise UserError(f"need rows x [n, D] and labels y [n], got {list(x.shape)} and "
                        f"{list(y.shape)}")
    if len(x) == 0:
        raise UserError("no rows to compute prototypes from")


def _tensor_version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # inference-mode tensors keep no version counter
        return -1
