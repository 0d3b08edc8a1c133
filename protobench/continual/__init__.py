"""Class-incremental streams, the continual run loop and accuracy-matrix metrics.

Avalanche interop lives in :mod:`protobench.continual.avalanche` (import it explicitly;
it needs the ``avalanche`` extra).
"""

from protobench.continual.job import ContinualConfig, ContinualOutcome, run_continual
from protobench.continual.metrics import (
    AccuracyMatrix,
    average_forgetting,
    average_incremental_accuracy,
    backward_transfer,
    final_average_accuracy,
    summarize,
    up_to_now_accuracy,
)
from protobench.continual.run import ContinualResult, experience_seed, run_stream
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
    "AccuracyMatrix", "ClassIncrementalStream", "ContinualConfig", "ContinualOutcome",
    "ContinualResult", "Experience", "StreamSpec", "average_forgetting",
    "average_incremental_accuracy", "backward_transfer", "build_stream", "class_order",
    "experience_seed", "final_average_accuracy", "holdout_split", "run_continual", "run_stream",
    "stream_from_dataset", "summarize", "up_to_now_accuracy",
]
