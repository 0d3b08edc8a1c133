"""Nearest class mean on frozen features, SimpleShot-style (Wang et al. 2019, "CL2N").

Features are centred by the mean feature of the meta-train split (when one is given)
and L2-normalised; a query takes the class of the nearest support mean in euclidean
distance. No training: the backbone is ``identity`` (raw inputs / feature files) or
any backbone loaded from a checkpoint (``checkpoint=`` a file written by
``--save-checkpoint`` of another method, e.g. a trained ProtoNet). ``metric="geodesic"``
compares class means in diffusion coordinates of the centred, normalised features
(:mod:`protobench.geometry.geodesic`).

The support means are the evaluator's (``Prototypes.from_support`` -> ``scores``); NCM has
no prototype code of its own. The centring mean is not a class prototype: it stays one
float32 ``mean(0)`` over the meta-train features (a float64 ``Prototypes`` sum would move
the last bits of every feature, and with them the board's numbers).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from protobench.backbones import build_backbone, extract_features
from protobench.datasets.base import LabeledData
from protobench.errors import UserError, check_input_shape
from protobench.feature_cache import weights_hash
from protobench.geometry.geodesic import check_metric_options
from protobench.methods.base import FewShotMethod, register_method
from protobench.utils import sha256_json


@register_method("ncm")
class NCM(FewShotMethod):
    """Centre by the base-class mean, L2-normalise, nearest class mean."""

    distances = ("sqeuclidean", "euclidean", "cosine", "geodesic")
    summary = "nearest class mean, centring + L2 normalisation (SimpleShot CL2N), no training"

    job_options = ("backbone",)

    def __init__(self, backbone: str = "identity", metric: str = "sqeuclidean",
                 centre: bool = True, normalise: bool = True, checkpoint: str = "",
                 metric_options: dict[str, Any] | None = None) -> None:
        self.backbone = backbone
        self.metric = metric
        self.centre = centre
        self.normalise = normalise
        self.checkpoint = checkpoint
        self.metric_options = metric_options
        self.geodesic = check_metric_options(metric, metric_options)
        self.encoder: torch.nn.Module | None = None
        self.in_shape: tuple[int, ...] | None = None
        self.mean: torch.Tensor | None = None

    def _encoder(self, data: LabeledData) -> torch.nn.Module:
        """The checkpoint's trained encoder, or a seeded ``backbone``; never replaced by a
        fresh one when the data have another shape than the encoder's (an error instead)."""
        in_shape = tuple(data.get(torch.tensor([0])).shape[1:])
        if self.encoder is None:
            if self.checkpoint:
                from protobench.methods.base import load_method

                trained = load_method(self.checkpoint)
                self.encoder = getattr(trained, "encoder", None)
                if self.encoder is None:
                    raise UserError(f"checkpoint {self.checkpoint} holds no encoder")
                shape = getattr(trained, "in_shape", None)
                self.in_shape = tuple(shape) if shape is not None else None
            else:
                self.in_shape = in_shape
                self.encoder = build_backbone(self.backbone, in_shape)
        check_input_shape(f"ncm (checkpoint {self.checkpoint})" if self.checkpoint else "ncm",
                          self.in_shape, in_shape)
        return self.encoder

    def fit(self, train: LabeledData | None, device: torch.device, steps: int | None = None,
            progress: bool = True) -> dict[str, Any]:
        self.mean = None
        if self.centre and train is not None:
            self.mean = self.cached_features(train, device).mean(0)
        return {"centred_on": train.split if self.mean is not None and train else "none"}

    def features(self, data: LabeledData, device: torch.device) -> torch.Tensor:
        if data.is_features and self.backbone == "identity" and not self.checkpoint:
            return data.x.float()
        return extract_features(self._encoder(data), data.get, len(data), device)

    def feature_key(self, data: LabeledData) -> str | None:
        if data.is_features and self.backbone == "identity" and not self.checkpoint:
            return None
        in_shape = tuple(data.get(torch.tensor([0])).shape[1:])
        return sha256_json({"backbone": self.backbone, "checkpoint": bool(self.checkpoint),
                            "in_shape": in_shape, "weights": weights_hash(self._encoder(data))})

    def transform(self, features: torch.Tensor) -> torch.Tensor:
        if self.mean is not None:
            features = features - self.mean.to(features)
        return F.normalize(features, dim=1) if self.normalise else features

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean = state.get("mean")
