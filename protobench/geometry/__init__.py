"""Distances and the prototype index."""

from protobench.geometry.index import PrototypeIndex, faiss_gpu_available
from protobench.geometry.metrics import get_metric, list_metrics, register_metric

__all__ = ["PrototypeIndex", "faiss_gpu_available", "get_metric", "list_metrics",
           "register_metric"]
