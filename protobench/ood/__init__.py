"""Out-of-distribution detection: metrics, post-hoc scores and ID/OOD set loading.

The OOD method protocol is :class:`protobench.methods.protocols.OODMethod`; the ``ce``
baseline lives in :mod:`protobench.methods.ce` and the job in :mod:`protobench.tasks.ood`.
"""

from protobench.ood.scores import OODScore, build_score, list_scores, register_score

__all__ = ["OODScore", "build_score", "list_scores", "register_score"]
