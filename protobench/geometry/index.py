"""`PrototypeIndex`: nearest-prototype search shared by every method.

Backends: ``faiss-gpu`` (when a CUDA GPU and faiss GPU support are present),
``faiss-cpu``, and ``torch`` (exact, the reference). ``auto`` picks the first
that is available. All return the same neighbours and distances (up to float
round-off): squared euclidean distances for ``sqeuclidean``, ``1 - cos`` for
``cosine`` (FAISS inner product on L2-normalised vectors).

Queries are searched in batches so memory stays bounded for millions of queries:
the torch backend sizes each batch so its ``[b, C]`` distance block stays under
``memory_budget`` bytes (256 MiB by default), whatever ``C``.

``approximate="ivf"`` (``IndexIVFFlat``: ``nlist`` k-means cells, ``nprobe`` visited)
or ``"hnsw"`` (``IndexHNSWFlat``: ``hnsw_m`` links, ``ef_search``; CPU only) trades
exactness for speed when exact search is too slow; ``recall(queries)`` measures the
fraction of queries whose nearest neighbour is the exact one, so a run can report it.
On a GPU, queries go in and results come out as CUDA tensors (no host copies, through
``faiss.contrib.torch_utils``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F

from protobench.errors import UserError
from protobench.geometry.metrics import get_metric

BACKENDS = ("auto", "torch", "faiss-cpu", "faiss-gpu")
FAISS_METRICS = ("sqeuclidean", "cosine")
APPROXIMATE = ("ivf", "hnsw")
TORCH_BUDGET = 256 * 2**20  # bytes of one [b, C] distance block


@lru_cache(maxsize=1)
def _faiss() -> Any | None:
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def faiss_gpu_available() -> bool:
    faiss = _faiss()
    return bool(faiss is not None and hasattr(faiss, "StandardGpuResources")
                and torch.cuda.is_available() and faiss.get_num_gpus() > 0)


def resolve_backend(backend: str, metric: str) -> str:
    if backend not in BACKENDS:
        raise UserError(f"unknown index backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "auto":
        if metric not in FAISS_METRICS or _faiss() is None:
            return "torch"
        return "faiss-gpu" if faiss_gpu_available() else "faiss-cpu"
    if backend.startswith("faiss") and metric not in FAISS_METRICS:
        raise UserError(f"FAISS cannot search metric {metric!r}; use --index-backend torch")
    if backend == "faiss-cpu" and _faiss() is None:
        raise UserError("faiss is not installed; `make install`, or use --index-backend torch")
    if backend == "faiss-gpu" and not faiss_gpu_available():
        raise UserError("faiss-gpu needs a CUDA GPU and faiss GPU support; use faiss-cpu or auto")
    return backend


def resolve_approximate(approximate: str | None, backend: str) -> str | None:
    if approximate is None:
        return None
    if approximate not in APPROXIMATE:
        raise UserError(f"unknown approximate index {approximate!r}; choose one of: "
                        f"{', '.join(APPROXIMATE)} (or none for exact search)")
    if backend == "torch":
        raise UserError("approximate search needs a FAISS backend; use --index-backend "
                        "faiss-cpu/faiss-gpu/auto with a sqeuclidean or cosine metric")
    if approximate == "hnsw" and backend == "faiss-gpu":
        raise UserError("FAISS has no GPU HNSW index; use approximate='ivf' on the GPU "
                        "or backend='faiss-cpu'")
    return approximate


@dataclass
class PrototypeIndex:
    """Index over prototypes ``[C, D]`` with optional ``labels [C]`` (class of each prototype).

    ``search(queries [M, D], k)`` -> ``(distances [M, k], ids [M, k])``, nearest first;
    ``predict(queries)`` -> ``[M]`` label of the nearest prototype.
    """

    prototypes: torch.Tensor
    labels: torch.Tensor | None = None
    metric: str = "sqeuclidean"
    backend: str = "auto"
    batch_size: int | None = None
    memory_budget: int = TORCH_BUDGET
    approximate: str | None = None
    nlist: int | None = None
    nprobe: int = 16
    hnsw_m: int = 32
    ef_search: int = 128
    _index: Any = field(default=None, init=False, repr=False)
    _res: Any = field(default=None, init=False, repr=False)
    _quantizer: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.prototypes.dim() != 2 or len(self.prototypes) == 0:
            raise UserError(f"prototypes must be a non-empty [C, D] tensor, got shape "
                            f"{list(self.prototypes.shape)}")
        get_metric(self.metric)
        self.backend = resolve_backend(self.backend, self.metric)
        self.approximate = resolve_approximate(self.approximate, self.backend)
        self.prototypes = self.prototypes.detach().float()
        if self.backend != "torch":
            self._build_faiss()

    def _vectors(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().float()
        return F.normalize(x, dim=-1, eps=1e-8) if self.metric == "cosine" else x

    def _build_faiss(self) -> None:
        faiss = _faiss()
        c, d = self.prototypes.shape
        ip = self.metric == "cosine"
        kind = faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2
        vectors = self._vectors(self.prototypes).cpu().contiguous().numpy()
        if self.approximate == "ivf":
            # k-means wants ~39+ points per cell; sqrt-scaled cells otherwise
            self.nlist = self.nlist or max(1, min(int(4 * c ** 0.5), c // 39))
            quantizer = faiss.IndexFlatIP(d) if ip else faiss.IndexFlatL2(d)
            cpu = faiss.IndexIVFFlat(quantizer, d, self.nlist, kind)
            cpu.train(vectors)
            cpu.nprobe = min(self.nprobe, self.nlist)
            self._quantizer = quantizer  # the index does not own it: keep it alive
        elif self.approximate == "hnsw":
            cpu = faiss.IndexHNSWFlat(d, self.hnsw_m, kind)
            cpu.hnsw.efSearch = self.ef_search
        else:
            cpu = faiss.IndexFlatIP(d) if ip else faiss.IndexFlatL2(d)
        if self.backend == "faiss-gpu":
            self._res = faiss.StandardGpuResources()
            self._index = faiss.index_cpu_to_gpu(self._res, torch.cuda.current_device(), cpu)
            if self.approximate == "ivf":
                self._index.nprobe = cpu.nprobe
        else:
            self._index = cpu
        self._index.add(vectors)

    def __len__(self) -> int:
        return self.prototypes.shape[0]

    def _batch(self) -> int:
        if self.batch_size is not None:
            return max(1, self.batch_size)
        if self.backend == "torch":  # the [b, C] float32 distance block (and its top-k)
            return max(1, self.memory_budget // (8 * len(self)))
        return 65536

    def search(self, queries: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        if queries.dim() != 2 or queries.shape[1] != self.prototypes.shape[1]:
            raise UserError(f"queries must be [M, {self.prototypes.shape[1]}], "
                            f"got {list(queries.shape)}")
        k = min(k, len(self))
        b = self._batch()
        outs = [self._search_batch(queries[s:s + b], k) for s in range(0, len(queries), b)]
        if not outs:
            return torch.empty(0, k), torch.empty(0, k, dtype=torch.int64)
        return torch.cat([d for d, _ in outs]), torch.cat([i for _, i in outs])

    def _search_batch(self, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.backend == "torch":
            if self.prototypes.device != q.device:
                self.prototypes = self.prototypes.to(q.device)
            dist = get_metric(self.metric)(q.detach().float(), self.prototypes)
            d, i = torch.topk(dist, k, dim=1, largest=False, sorted=True)
            return d, i
        v = self._vectors(q)
        if self.backend == "faiss-cpu":
            d_np, i_np = self._index.search(v.cpu().contiguous().numpy(), k)
            d, i = torch.from_numpy(d_np), torch.from_numpy(i_np)
        else:
            d, i = self._gpu_search(v, k)
        if self.metric == "cosine":
            d = 1.0 - d
        return d.to(q.device), i.to(q.device)

    def _gpu_search(self, v: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Torch tensors in and out on the GPU without host copies (faiss.contrib.torch_utils).
        import faiss.contrib.torch_utils  # noqa: F401  (patches index.search for torch)

        return self._index.search(v.cuda().contiguous(), k)

    def predict(self, queries: torch.Tensor) -> torch.Tensor:
        _, ids = self.search(queries, 1)
        ids = ids[:, 0]
        return ids if self.labels is None else self.labels.to(ids.device)[ids]

    def recall(self, queries: torch.Tensor, k: int = 1) -> float:
        """Recall@k of this index against exact torch search: the fraction of the exact
        ``k`` nearest prototypes that this index returns (1.0 for exact backends)."""
        exact = PrototypeIndex(self.prototypes, metric=self.metric, backend="torch",
                               memory_budget=self.memory_budget)
        _, truth = exact.search(queries, k)
        _, found = self.search(queries, k)
        found = found.to(truth.device)
        hit = (truth.unsqueeze(-1) == found.unsqueeze(-2)).any(-1)
        return hit.double().mean().item()
