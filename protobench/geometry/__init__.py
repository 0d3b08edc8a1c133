"""Prototypes, distances, diffusion maps (geodesic metric) and the prototype index."""

from protobench.geometry.diffusion import DiffusionMap, fit_diffusion_map, nystrom
from protobench.geometry.geodesic import GeodesicHead, GeodesicOptions
from protobench.geometry.index import PrototypeIndex, faiss_gpu_available
from protobench.geometry.metrics import get_metric, list_metrics, register_metric
from protobench.geometry.prototypes import Prototypes, PrototypeScorer

__all__ = ["DiffusionMap", "GeodesicHead", "GeodesicOptions", "PrototypeIndex", "PrototypeScorer",
           "Prototypes", "faiss_gpu_available", "fit_diffusion_map", "get_metric", "list_metrics",
           "nystrom", "register_metric"]
