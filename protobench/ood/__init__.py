"""Out-of-distribution detection: metrics, post-hoc scores and the OOD method protocol.

Importing this package registers the built-in OOD methods (``ce`` here; ``palm`` lives in
:mod:`protobench.methods`) and scores. The method registry is imported first: OOD methods
defined under :mod:`protobench.methods` import :mod:`protobench.ood.model`, so the
registry must finish loading before the model module starts.
"""

import protobench.methods  # noqa: F401  (must come first, see the docstring)
from protobench.ood import ce  # noqa: F401  (registers the "ce" method)
from protobench.ood.model import OODMethod
from protobench.ood.scores import OODScore, build_score, list_scores, register_score

__all__ = ["OODMethod", "OODScore", "build_score", "list_scores", "register_score"]
