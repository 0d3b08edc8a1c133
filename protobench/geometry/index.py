"""`PrototypeIndex`: nearest-prototype search shared by every method.

Backends: ``faiss-gpu`` (when a CUDA GPU and faiss GPU support are present),
``faiss-cpu``, and ``torch`` (exact, the reference). ``auto`` picks the first
that is available. All return the same neighbours and distances (up to float
round-off): squared euclidean distances for ``sqeuclidean``, ``1 - cos`` for
``cosine`` (FAISS inner product on L2-normalised vectors).

Queries are searched in batches of ``batch_size`` so memory stays bounded for
millions of queries.
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
    batch_size: int = 65536
    _index: Any = field(default=None, init=False, repr=False)
    _res: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.prototypes.dim() != 2:
            raise ValueError("prototypes must be [C, D]")
        get_metric(self.metric)
        self.backend = resolve_backend(self.backend, self.metric)
        self.prototypes = self.prototypes.detach().float()
        if self.backend != "torch":
            self._build_faiss()

    def _vectors(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().float()
        return F.normalize(x, dim=-1, eps=1e-8) if self.metric == "cosine" else x

    def _build_faiss(self) -> None:
        faiss = _faiss()
        d = self.prototypes.shape[1]
        cpu = faiss.IndexFlatIP(d) if self.metric == "cosine" else faiss.IndexFlatL2(d)
        if self.backend == "faiss-gpu":
            self._res = faiss.StandardGpuResources()
            self._index = faiss.index_cpu_to_gpu(self._res, torch.cuda.current_device(), cpu)
            self._index.add(self._vectors(self.prototypes).cpu().numpy())
        else:
            cpu.add(self._vectors(self.prototypes).cpu().contiguous().numpy())
            self._index = cpu

    def __len__(self) -> int:
        return self.prototypes.shape[0]

    def search(self, queries: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        if queries.dim() != 2 or queries.shape[1] != self.prototypes.shape[1]:
            raise UserError(f"queries must be [M, {self.prototypes.shape[1]}], "
                            f"got {list(queries.shape)}")
        k = min(k, len(self))
        outs = [self._search_batch(queries[s:s + self.batch_size], k)
                for s in range(0, len(queries), self.batch_size)]
        if not outs:
            return torch.empty(0, k), torch.empty(0, k, dtype=torch.int64)
        return torch.cat([d for d, _ in outs]), torch.cat([i for _, i in outs])

    def _search_batch(self, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.backend == "torch":
            p = self.prototypes.to(q.device)
            dist = get_metric(self.metric)(q.detach().float(), p)
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
