"""PALM's batched views against torchvision's per-image transforms."""

from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as TF

from protobench.methods.palm_augment import (
    crop_params,
    crop_resize,
    jitter,
    paper_view,
    shift_noise_view,
)


def images(b: int = 4, c: int = 3, h: int = 12, w: int = 12) -> torch.Tensor:
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(0))


def test_crop_resize_matches_torchvision_resized_crop() -> None:
    x = images(6)
    boxes = crop_params(6, 12, 12, torch.Generator().manual_seed(1))
    assert bool((boxes[:, 2] <= 12).all()) and bool((boxes[:, 0] + boxes[:, 2] <= 12).all())
    out = crop_resize(x, boxes)
    for i, (top, left, h, w) in enumerate(boxes.tolist()):
        ref = TF.resized_crop(x[i], top, left, h, w, [12, 12], antialias=True)
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)


def test_crop_params_respect_scale_and_ratio() -> None:
    boxes = crop_params(2000, 32, 32, torch.Generator().manual_seed(2)).double()
    area = boxes[:, 2] * boxes[:, 3] / 1024
    assert area.min() >= 0.18 and area.max() <= 1.0  # rounding of the sides
    ratio = boxes[:, 3] / boxes[:, 2]
    assert ratio.min() >= 0.6 and ratio.max() <= 1.6


def test_jitter_matches_torchvision_ops_in_the_drawn_order() -> None:
    x = images(4)
    factors = torch.tensor([[0.7, 1.3, 1.0, 0.6], [1.2, 0.8, 0.65, 1.4], [0.9, 1.35, 0.6, 1.1]])
    hues = torch.tensor([0.05, -0.08, 0.1, -0.02])
    order = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]])
    out = jitter(x, factors, hues, order)
    ops = [lambda im, i: TF.adjust_brightness(im, float(factors[0, i])),
           lambda im, i: TF.adjust_contrast(im, float(factors[1, i])),
           lambda im, i: TF.adjust_saturation(im, float(factors[2, i])),
           lambda im, i: TF.adjust_hue(im, float(hues[i]))]
    for i in range(4):
        ref = x[i]
        for op in order[i].tolist():
            ref = ops[op](ref, i)
        # grey = 0.299 R + ... as PIL (the reference jitters PIL images); torchvision's
        # tensor ops use 0.2989 R, a difference below 1e-4
        torch.testing.assert_close(out[i], ref, atol=1e-4, rtol=0)


def test_views_are_seeded_and_keep_shape() -> None:
    x = images(5)
    a = paper_view(x, torch.Generator().manual_seed(3))
    b = paper_view(x, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, paper_view(x, torch.Generator().manual_seed(4)))
    grey = paper_view(images(3, c=1), torch.Generator().manual_seed(3))
    assert grey.shape == (3, 1, 12, 12)


def test_shift_noise_moves_by_at_most_one_pixel() -> None:
    x = torch.zeros(50, 1, 8, 8)
    x[:, 0, 4, 4] = 1.0
    out = shift_noise_view(x, torch.Generator().manual_seed(5), shift=1, noise_std=0.0)
    peaks = torch.nonzero(out[:, 0] == 1.0)[:, 1:]
    assert len(peaks) == 50 and bool(((peaks - 4).abs() <= 1).all())
    assert len({tuple(p) for p in peaks.tolist()}) > 3
    noisy = shift_noise_view(torch.zeros(4000, 3), torch.Generator().manual_seed(6),
                             noise_std=0.1)
    assert abs(float(noisy.std()) - 0.1) < 0.005
