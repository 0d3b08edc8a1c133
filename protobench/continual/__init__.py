"""Class-incremental streams and accuracy-matrix metrics.

The run loop is :mod:`protobench.tasks.continual_run` and the job
:mod:`protobench.tasks.continual`. Avalanche interop lives in
:mod:`protobench.continual.avalanche` (import it explicitly; it needs the ``avalanche``
extra).
"""

from protobench.continual.metrics import (
    AccuracyMatrix,
    average_forgetting,
    average_incremental_accuracy,
    backward_transfer,
    final_average_accuracy,
    summarize,
    up_to_now_accuracy,
)
from protobench.continual.stream import (
    ClassIncrementalStream,
    Experience,
    StreamSpec,
    build_stream,
    class_order,
    holdout_split,
    stream_from_dataset,
)

__all__ = [
    "AccuracyMatrix", "ClassIncrementalStream", "Experience", "StreamSpec",
    "average_forgetting", "average_incremental_accuracy", "backward_transfer", "build_stream",
    "class_order", "final_average_accuracy", "holdout_split", "stream_from_dataset",
    "summarize", "up_to_now_accuracy",
]
