"""``knn``: minus the distance to the k-th nearest ID training feature (Sun et al. 2022).

z = h / (||h|| + 1e-10) (``normalize=True``, the paper's and OpenOOD's setting);
score(x) = -|| z(x) - z_(k) ||, z_(k) the k-th nearest normalised training feature.
OpenOOD returns minus the *squared* distance: rank-equivalent, same metrics. k = 50 by
default (OpenOOD; its APS sweep is {50, 100, 200, 500, 1000}).

The search goes through :class:`~protobench.geometry.index.PrototypeIndex` over the
training features (exact FAISS ``IndexFlatL2`` on CPU or GPU when faiss is installed,
exact torch otherwise, ``backend`` to force one); queries are searched in batches, so
memory stays bounded whatever the number of queries: queries are normalised and searched
``CHUNK`` at a time, and the torch backend keeps each ``[b, n_train]`` distance block under
the index's memory budget (256 MiB).
"""

from __future__ import annotations

import torch

from protobench.errors import UserError
from protobench.geometry.index import PrototypeIndex
from protobench.ood.scores.base import OODScore, check_features, register_score

CHUNK = 16384  # queries normalised and searched at a time


@register_score("knn")
class KNN(OODScore):
    summary = "-distance to the k-th nearest normalised ID train feature (FAISS or torch)"

    def __init__(self, k: int = 50, normalize: bool = True, backend: str = "auto",
                 batch_size: int | None = None) -> None:
        self.k = k
        self.normalize = normalize
        self.backend = backend
        self.batch_size = batch_size
        self.index: PrototypeIndex | None = None

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return x / (x.norm(dim=1, keepdim=True) + 1e-10) if self.normalize else x

    def fit(self, train_features: torch.Tensor, train_labels: torch.Tensor | None = None,
            train_logits: torch.Tensor | None = None) -> KNN:
        if int(self.k) < 1:
            raise UserError(f"knn needs k >= 1, got k={self.k}")
        x = self._prep(check_features(train_features, "ID training features"))
        self.index = PrototypeIndex(x, metric="sqeuclidean", backend=self.backend,
                                    batch_size=self.batch_size)
        return self

    def score(self, features: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        if self.index is None:
            raise RuntimeError("knn scores only after fit")
        k = min(int(self.k), len(self.index))
        out = []
        for lo in range(0, len(features), CHUNK):  # normalised copies stay chunk-sized
            d, _ = self.index.search(self._prep(features[lo:lo + CHUNK]), k)
            out.append(-d[:, k - 1].clamp_min(0).sqrt().float().cpu())
        return torch.cat(out) if out else torch.empty(0)
