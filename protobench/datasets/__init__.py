"""Dataset registry and loaders. Importing this package registers every built-in dataset."""

from protobench.datasets import (
    cifar,  # noqa: F401  (registers)
    digits,  # noqa: F401  (registers)
    features,  # noqa: F401  (registers)
    folder,  # noqa: F401  (registers)
    imagenet_folders,  # noqa: F401  (registers)
    mini_imagenet,  # noqa: F401  (registers)
    omniglot,  # noqa: F401  (registers)
    ood_sets,  # noqa: F401  (registers)
    torchvision_sets,  # noqa: F401  (registers)
)
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

__all__ = [
    "DatasetEntry", "LabeledData", "cache_dir", "default_data_root", "get_dataset",
    "list_datasets", "load_dataset", "register_dataset",
]
