"""Batched, seeded views for PALM (card section 1 and the toy run of section 8).

``paper_view``: per image, RandomResizedCrop(size, scale 0.2-1, ratio 3/4-4/3, bilinear)
-> horizontal flip (p 0.5) -> ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8 (the four
adjustments in a random order per image, as torchvision) -> RandomGrayscale (p 0.2), on
``[0, 1]`` images ``[B, C, H, W]``. ``shift_noise_view``: a random shift of up to
``shift`` pixels per axis (zero padding) plus Gaussian noise, for tiny or grey inputs
(vectors: noise only). Every draw comes from an explicit ``torch.Generator`` (CPU), so a
seed fixes the views on any device. Normalisation is applied by the caller.

Departure: torchvision samples the crop with up to 10 rejection attempts per image; the
attempts are drawn here for the whole batch at once (same distribution, different
random stream), with a whole-image fallback (torchvision's fallback for square inputs).
The crop is resized with the bilinear rule of ``interpolate`` (``align_corners=False``);
torchvision's antialiased resize is the same rule when upsampling, the only case here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _rand(gen: torch.Generator, device: torch.device, *shape: int) -> torch.Tensor:
    return torch.rand(shape, generator=gen).to(device)


def crop_params(b: int, h: int, w: int, gen: torch.Generator,
                scale: tuple[float, float] = (0.2, 1.0),
                ratio: tuple[float, float] = (3 / 4, 4 / 3), attempts: int = 10
                ) -> torch.Tensor:
    """``[b, 4]`` int64 ``(top, left, height, width)`` of RandomResizedCrop's boxes."""
    area = h * w * (scale[0] + (scale[1] - scale[0]) * torch.rand(b, attempts, generator=gen))
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lo + (hi - lo) * torch.rand(b, attempts, generator=gen))
    cw = torch.round(torch.sqrt(area * aspect))
    ch = torch.round(torch.sqrt(area / aspect))
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    found = ok.any(1)
    pick = ok.float().argmax(1, keepdim=True)
    cw = torch.where(found, cw.gather(1, pick)[:, 0], torch.full((b,), float(w)))
    ch = torch.where(found, ch.gather(1, pick)[:, 0], torch.full((b,), float(h)))
    top = torch.floor(torch.rand(b, generator=gen) * (h - ch + 1))
    left = torch.floor(torch.rand(b, generator=gen) * (w - cw + 1))
    return torch.stack([top, left, ch, cw], 1).long()


def _axis(start: torch.Tensor, size: torch.Tensor, out: int
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear source indices (``i0, i1 [b, out]``) and weights of resizing ``size`` pixels
    from ``start`` to ``out`` (``align_corners=False``, edges clamped, as ``interpolate``)."""
    pos = ((torch.arange(out, device=size.device) + 0.5)[None] * (size[:, None] / out)
           - 0.5).clamp(min=0)
    i0 = pos.floor().long()
    frac = pos - i0
    i1 = torch.minimum(i0 + 1, size[:, None] - 1)
    return start[:, None] + i0, start[:, None] + i1, frac


def crop_resize(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Crop ``boxes [B, 4]`` (top, left, height, width) of ``x [B, C, H, W]`` and resize each
    back to ``H x W`` (bilinear; boxes never exceed the image, so this only upsamples)."""
    b, _, h, w = x.shape
    boxes = boxes.to(x.device)
    y0, y1, fy = _axis(boxes[:, 0], boxes[:, 2], h)
    x0, x1, fx = _axis(boxes[:, 1], boxes[:, 3], w)
    img = torch.arange(b, device=x.device)[:, None, None]

    def at(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return x[img, :, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]

    fy, fx = fy[:, :, None, None].to(x), fx[:, None, :, None].to(x)
    top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
    bottom = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
    return (top * (1 - fy) + bottom * fy).permute(0, 3, 1, 2)


def random_resized_crop(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``[B, C, H, W]`` -> same shape: RandomResizedCrop(H x W, scale 0.2-1, ratio 3/4-4/3)."""
    return crop_resize(x, crop_params(len(x), x.shape[2], x.shape[3], gen))


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` -> ``[B, 1, H, W]`` luma (ITU-R 601-2, as PIL's ``convert("L")``)."""
    return 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def shift_hue(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of RGB images ``[B, 3, H, W]`` in ``[0, 1]`` by ``factor [B]``
    (fraction of a turn, in ``[-0.5, 0.5]``), through HSV as torchvision's ``adjust_hue``."""
    r, g, b = x.unbind(1)
    maxc, minc = x.max(1).values, x.min(1).values
    chroma = maxc - minc
    flat = chroma == 0
    div = torch.where(flat, torch.ones_like(chroma), chroma)
    sat = chroma / torch.where(flat, torch.ones_like(maxc), maxc)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(flat, torch.zeros_like(hue), hue)
    hue = torch.remainder(hue / 6.0 + factor[:, None, None], 1.0)
    out = []
    for n in (5.0, 3.0, 1.0):  # R, G, B of the HSV -> RGB formula
        k = torch.remainder(n + hue * 6.0, 6.0)
        out.append(maxc - maxc * sat * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return torch.stack(out, 1)


def jitter(x: torch.Tensor, factors: torch.Tensor, hues: torch.Tensor, order: torch.Tensor
           ) -> torch.Tensor:
    """Brightness, contrast, saturation (``factors [3, B]``) and hue (``hues [B]``) of
    images ``[B, C, H, W]``, applied in the order ``order [B, 4]`` (0..3 in that list),
    each as torchvision's functional ``adjust_*``."""
    b, c = x.shape[:2]
    view = (b, 1, 1, 1)
    order = order.to(x.device)
    fb, fc, fs = (f.to(x).view(view) for f in factors)
    for slot in range(4):
        op = order[:, slot].view(view)
        gray = grayscale(x) if c == 3 else x
        bright = (x * fb).clamp(0, 1)
        mean = gray.mean((1, 2, 3), keepdim=True)
        contrast = (fc * x + (1 - fc) * mean).clamp(0, 1)
        if c == 3:
            sat = (fs * x + (1 - fs) * gray).clamp(0, 1)
            hued = shift_hue(x, hues.to(x))
        else:  # saturation and hue do nothing on grey images (torchvision)
            sat = hued = x
        x = torch.where(op == 0, bright, torch.where(op == 1, contrast,
                                                     torch.where(op == 2, sat, hued)))
    return x


def color_jitter(x: torch.Tensor, gen: torch.Generator, strength: float = 0.4,
                 hue: float = 0.1) -> torch.Tensor:
    """ColorJitter(strength, strength, strength, hue) on every image of ``[B, C, H, W]``;
    the four adjustments run in an independent random order per image."""
    b = len(x)
    factors = 1 - strength + 2 * strength * torch.rand(3, b, generator=gen)
    hues = (2 * torch.rand(b, generator=gen) - 1) * hue
    order = torch.argsort(torch.rand(b, 4, generator=gen), dim=1)
    return jitter(x, factors, hues, order)


def paper_view(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One view of ``[B, C, H, W]`` images in ``[0, 1]`` with the card's augmentation."""
    b, c = x.shape[:2]
    dev = x.device
    view = (b, 1, 1, 1)
    x = random_resized_crop(x, gen)
    x = torch.where(_rand(gen, dev, b).view(view) < 0.5, x.flip(-1), x)
    apply = _rand(gen, dev, b).view(view) < 0.8
    x = torch.where(apply, color_jitter(x, gen), x)
    if c == 3:
        x = torch.where(_rand(gen, dev, b).view(view) < 0.2, grayscale(x).expand_as(x), x)
    return x


def shift_noise_view(x: torch.Tensor, gen: torch.Generator, shift: int = 1,
                     noise_std: float = 0.1) -> torch.Tensor:
    """A random shift in ``[-shift, shift]`` pixels per axis (zero padding) of images
    ``[B, C, H, W]`` plus Gaussian noise of std ``noise_std``; other shapes: noise only."""
    dev = x.device
    if x.dim() == 4 and shift > 0:
        b, _, h, w = x.shape
        oy = torch.randint(2 * shift + 1, (b,), generator=gen).to(dev)
        ox = torch.randint(2 * shift + 1, (b,), generator=gen).to(dev)
        rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]
        padded = F.pad(x, (shift, shift, shift, shift))
        x = padded[torch.arange(b, device=dev)[:, None, None, None],
                   torch.arange(x.shape[1], device=dev)[None, :, None, None], rows, cols]
    return x + torch.randn(x.shape, generator=gen).to(dev) * noise_std
