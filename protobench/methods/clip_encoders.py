"""Vision-language encoders for Proto-CLIP: a small protocol and its open_clip implementation.

``ClipEncoder``: ``tokenize(texts) -> [n, L]``, ``encode_text(tokens) -> [n, d]``,
``encode_image(images) -> [B, d]`` (``images`` already in the encoder's input format, see
``preprocess``). ``OpenClipEncoder`` builds any open_clip model/tag
(``OpenClipEncoder("RN50", "openai")``, ``("ViT-B-32", "openai")``...). Weights load through
open_clip (downloaded once into its cache by users with a network); ``pretrained="none"``
gives a seeded random initialisation (tests, smoke runs). ``model`` may also be the path of
an open_clip model-config JSON, registered under the file's stem first.

Image preprocessing of dataset tensors (``to_clip_input``): ``[B, C, H, W]`` floats in
``[0, 1]`` (1 channel, e.g. digits / Omniglot, is repeated to RGB) -> shortest side resized to
the model's image size (bicubic, antialiased), centre crop, clamp to ``[0, 1]``, CLIP mean/std
normalisation: the tensor analogue of CLIP's Resize-CenterCrop-ToTensor-Normalize.

Text prototypes (card section 2): per class, every prompt template is filled with the class's
readable name, encoded, L2-normalised; the class's prototype is the re-normalised mean.
Templates (card section 1): the 7-template ImageNet ensemble for the ImageNet-derived
datasets, "a photo of a {}." otherwise; the card's per-dataset templates by name
(``prompts="oxford_pets"``), or literal templates separated by ``|``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from protobench.errors import UserError
from protobench.feature_cache import weights_hash

IMAGENET_TEMPLATES = ("itap of a {}.", "a bad photo of the {}.", "a origami {}.",
                      "a photo of the large {}.", "a {} in a video game.", "art of the {}.",
                      "a photo of the small {}.")
CARD_TEMPLATES: dict[str, tuple[str, ...]] = {
    "imagenet": IMAGENET_TEMPLATES,
    "caltech101": ("a photo of a {}.",), "sun397": ("a photo of a {}.",),
    "stanford_cars": ("a photo of a {}.",),
    "oxford_pets": ("a photo of a {}, a type of pet.",),
    "oxford_flowers": ("a photo of a {}, a type of flower.",),
    "fgvc": ("a photo of a {}, a type of aircraft.",),
    "food101": ("a photo of {}, a type of food.",), "dtd": ("{} texture.",),
    "eurosat": ("a centered satellite photo of {}.",),
    "ucf101": ("a photo of a person doing {}.",), "fewsol": ("a photo of a {}",),
}
IMAGENET_DATASETS = ("mini-imagenet", "tiny-imagenet", "imagenet-subset")
DEFAULT_TEMPLATES = ("a photo of a {}.",)
_WNID = re.compile(r"^n\d{8}$")


class ClipEncoder(Protocol):
    """What Proto-CLIP needs from a vision-language model."""

    embed_dim: int

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor: ...

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor: ...

    def encode_image(self, images: torch.Tensor) -> torch.Tensor: ...

    def preprocess(self, x: torch.Tensor) -> torch.Tensor: ...


def to_clip_input(x: torch.Tensor, size: tuple[int, int], mean: Sequence[float],
                  std: Sequence[float]) -> torch.Tensor:
    """``[B, C, H, W]`` in ``[0, 1]`` (C = 1 or 3) -> ``[B, 3, size]`` CLIP-normalised."""
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise UserError(f"CLIP encoders take images [B, 1 or 3, H, W], got {list(x.shape)}; "
                        "use an image dataset, not a feature file")
    x = x.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    h, w = x.shape[-2:]
    scale = max(size[0] / h, size[1] / w)  # shortest side to the target, then centre crop
    rh, rw = max(size[0], round(h * scale)), max(size[1], round(w * scale))
    if (rh, rw) != (h, w):
        x = F.interpolate(x, size=(rh, rw), mode="bicubic", align_corners=False,
                          antialias=rh < h or rw < w)
    top, left = (rh - size[0]) // 2, (rw - size[1]) // 2
    x = x[..., top:top + size[0], left:left + size[1]].clamp(0, 1)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def _import_open_clip() -> Any:
    try:
        import open_clip
    except Exception as exc:  # noqa: BLE001  (a torchvision build mismatch raises RuntimeError)
        raise UserError(f"open_clip cannot be imported ({exc}); install the clip extra: "
                        "pip install 'protobench[clip]'") from exc
    return open_clip


class OpenClipEncoder:
    """An open_clip model, frozen and in eval mode, float32."""

    def __init__(self, model: str = "RN50", pretrained: str = "openai", seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        open_clip = _import_open_clip()
        name = model
        if model.endswith(".json"):
            path = Path(model).expanduser()
            if not path.is_file():
                raise UserError(f"open_clip model config {model} does not exist; pass a "
                                "model name (e.g. RN50, ViT-B-32) or an existing JSON file")
            open_clip.add_model_config(path)
            name = path.stem
        if name not in open_clip.list_models():
            raise UserError(f"unknown open_clip model {name!r}; choose one of "
                            f"`open_clip.list_models()` (e.g. RN50, ViT-B-32, ViT-B-16) or "
                            "pass the path of a model-config JSON")
        tag = None if pretrained.lower() in ("", "none", "random") else pretrained
        quick_gelu = False
        if tag is not None and not Path(tag).is_file():
            tags = open_clip.list_pretrained_tags_by_model(name)
            if tag not in tags:
                raise UserError(f"open_clip has no pretrained weights {tag!r} for {name}; "
                                f"choose one of: {', '.join(tags) or 'none'} (or a checkpoint "
                                "file, or --pretrained none for random weights)")
            quick_gelu = bool(open_clip.get_pretrained_cfg(name, tag).get("quick_gelu", False))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # random init (pretrained none) is reproducible
            try:
                net = open_clip.create_model(name, pretrained=tag, device="cpu",
                                             force_quick_gelu=quick_gelu)
            except RuntimeError as exc:
                cause = str(exc).splitlines()[0]
                cause = cause if len(cause) <= 160 else cause[:157] + "..."
                raise UserError(
                    f"cannot load pretrained weights {tag!r} for open_clip model {name}: not in "
                    f"open_clip's cache and not downloadable here ({cause}); run once with a "
                    "network so open_clip caches them (HF_HUB_OFFLINE unset), or pass "
                    "--pretrained PATH to a local checkpoint file, or --pretrained none for "
                    "random weights (no meaningful accuracy)") from exc
        self.model = net.eval().requires_grad_(False).to(device)
        self.device = torch.device(device)
        self.name, self.pretrained = name, tag or "none"
        cfg = getattr(net.visual, "preprocess_cfg", {})
        size = cfg.get("size", getattr(net.visual, "image_size", 224))
        self.image_size: tuple[int, int] = (size, size) if isinstance(size, int) else tuple(size)
        self.mean = tuple(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)))
        self.std = tuple(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))
        self.tokenizer = open_clip.get_tokenizer(name)
        with torch.no_grad():
            self.embed_dim = int(self.encode_text(self.tokenize(["a"])).shape[1])
        self._hash: str | None = None

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """``[n, L]`` int64 token ids."""
        return self.tokenizer(list(texts))

    @torch.no_grad()
    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[n, L]`` -> ``[n, d]`` float32 (unnormalised)."""
        return self.model.encode_text(tokens.to(self.device)).float()

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` preprocessed -> ``[B, d]`` float32 (unnormalised)."""
        return self.model.encode_image(images.to(self.device)).float()

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return to_clip_input(x, self.image_size, self.mean, self.std)

    def key(self) -> dict[str, Any]:
        """What determines the features: model, tag, preprocessing, a hash of every weight."""
        if self._hash is None:
            self._hash = weights_hash(self.model)
        return {"clip_model": self.name, "pretrained": self.pretrained,
                "image_size": list(self.image_size), "mean": list(self.mean),
                "std": list(self.std), "preprocess": "shortest-bicubic-crop/1",
                "weights": self._hash}


def image_features(encoder: ClipEncoder, get: Any, n: int, batch: int = 256) -> torch.Tensor:
    """L2-normalised image features ``[n, d]`` (CPU) of samples ``get(idx)`` ``[B, C, H, W]``."""
    out = []
    for start in range(0, n, batch):
        idx = torch.arange(start, min(n, start + batch))
        out.append(F.normalize(encoder.encode_image(encoder.preprocess(get(idx))), dim=1).cpu())
    return torch.cat(out) if out else torch.empty(0, encoder.embed_dim)


def templates_for(dataset: str, prompts: str = "auto") -> tuple[str, ...]:
    """The prompt templates: ``auto`` (by dataset), a card dataset key, or ``"t1|t2"``."""
    if prompts == "auto":
        return IMAGENET_TEMPLATES if dataset in IMAGENET_DATASETS else DEFAULT_TEMPLATES
    if prompts in CARD_TEMPLATES:
        return CARD_TEMPLATES[prompts]
    found = tuple(t.strip() for t in prompts.split("|") if t.strip())
    if not found or any("{}" not in t for t in found):
        raise UserError(f"prompts={prompts!r}: give 'auto', one of {', '.join(CARD_TEMPLATES)}, "
                        "or templates with '{}' for the class name, separated by '|'")
    return found


def text_prototypes(encoder: ClipEncoder, names: Sequence[str], templates: Sequence[str],
                    batch: int = 256) -> torch.Tensor:
    """``[C, d]``: per class, normalise each prompt's feature, average, re-normalise."""
    ids = [n for n in names if _WNID.match(n)]
    if ids:
        raise UserError(f"class names like {ids[0]!r} are WordNet ids, not words; put "
                        "ImageNet's words.txt (wnid<TAB>names) in the data root")
    texts = [t.format(n) for n in names for t in templates]
    feats = []
    for start in range(0, len(texts), batch):
        tokens = encoder.tokenize(texts[start:start + batch])
        feats.append(F.normalize(encoder.encode_text(tokens), dim=1).cpu())
    z = torch.cat(feats).view(len(names), len(templates), -1)
    return F.normalize(z.mean(1), dim=1)
