"""`digits`: scikit-learn's embedded 8x8 handwritten digits (1797 images, 10 classes).

No download, no data root. Fixed class split for few-shot use: meta-train on
digits 0-4, meta-test on 5-9 (``all`` keeps every class, e.g. for streams).
Images are scaled to ``[0, 1]`` and, by default, resized to 28x28 (bilinear)
so that the Conv-4 of the ProtoNet card applies unchanged; ``image_size=8``
keeps the original resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from protobench.datasets.base import LabeledData, register_dataset

SPLITS = {"train": list(range(5)), "test": list(range(5, 10)), "all": list(range(10))}


@register_dataset(
    "digits",
    splits=tuple(SPLITS),
    description="scikit-learn digits, 8x8 -> 28x28 grey; train 0-4 / test 5-9 (embedded)",
)
def load_digits(split: str, root=None, download: bool = True, image_size: int = 28) -> LabeledData:
    from sklearn.datasets import load_digits as sk_load

    bunch = sk_load()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [n, 1, 8, 8]
    if int(image_size) != 8:
        x = F.interpolate(x, size=(int(image_size), int(image_size)), mode="bilinear",
                          align_corners=False)
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    full = LabeledData(x=x.contiguous(), labels=labels,
                       class_names=tuple(f"digit {d}" for d in range(10)),
                       name="digits", split="all")
    return full.subset_classes(SPLITS[split], split=split)
