"""Method registry. Importing this package registers every built-in method."""

from protobench.methods import ncm, protonet  # noqa: F401  (registers)
from protobench.methods.base import (
    FewShotMethod,
    Method,
    build_method,
    get_method_class,
    list_methods,
    load_method,
    register_method,
)

__all__ = ["FewShotMethod", "Method", "build_method", "get_method_class", "list_methods",
           "load_method", "register_method"]
