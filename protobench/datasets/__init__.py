"""Dataset registry and loaders. Importing this package registers every built-in dataset."""

from protobench.datasets.base import (
    DatasetEntry,
    LabeledData,
    cache_dir,
    default_data_root,
    get_dataset,
    list_datasets,
    load_dataset,
    register_dataset,
)
from protobench.datasets import digits  # noqa: F401  (registers)
from protobench.datasets import omniglot  # noqa: F401  (registers)
from protobench.datasets import cifar  # noqa: F401  (registers)
from protobench.datasets import mini_imagenet  # noqa: F401  (registers)
from protobench.datasets import folder  # noqa: F401  (registers)
from protobench.datasets import features  # noqa: F401  (registers)

__all__ = [
    "DatasetEntry", "LabeledData", "cache_dir", "default_data_root", "get_dataset",
    "list_datasets", "load_dataset", "register_dataset",
]
