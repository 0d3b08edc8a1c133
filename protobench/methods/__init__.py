"""Method registry. Importing this package registers every built-in method."""

from protobench.methods import (  # noqa: F401  (registers)
    ce,
    cider,
    efc,
    fecam,
    finetune,
    joint,
    lwf,
    napa_vq,
    ncm,
    palm,
    prd,
    proto_clip,
    protonet,
    transductive,
)
from protobench.methods.base import (
    build_method,
    get_method_class,
    list_methods,
    load_method,
    register_method,
)
from protobench.methods.protocols import (
    ContinualMethod,
    ExperienceInfo,
    FewShotMethod,
    Method,
    OODMethod,
)

__all__ = ["ContinualMethod", "ExperienceInfo", "FewShotMethod", "Method", "OODMethod", "build_method",
           "get_method_class", "list_methods", "load_method", "register_method"]
