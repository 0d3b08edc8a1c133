"""Method registry. Importing this package registers every built-in method."""

from protobench.methods import (  # noqa: F401  (registers)
    finetune,
    joint,
    napa_vq,
    ncm,
    palm,
    prd,
    proto_clip,
    protonet,
)
from protobench.methods.base import (
    FewShotMethod,
    Method,
    build_method,
    get_method_class,
    list_methods,
    load_method,
    register_method,
)
from protobench.methods.continual_base import ContinualMethod, ExperienceInfo

__all__ = ["ContinualMethod", "ExperienceInfo", "FewShotMethod", "Method", "build_method",
           "get_method_class", "list_methods", "load_method", "register_method"]
