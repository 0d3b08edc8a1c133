"""CLIP encoders: preprocessing of dataset tensors, the open_clip wrapper (tiny random model),
text prototypes, prompt templates, errors, and the per-split feature cache."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from protobench.datasets import load_dataset
from protobench.errors import UserError
from protobench.feature_cache import FeatureCache
from protobench.methods.clip_encoders import (
    IMAGENET_TEMPLATES,
    OpenClipEncoder,
    templates_for,
    text_prototypes,
    to_clip_input,
)
from protobench.methods.proto_clip import ProtoCLIP

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)


def test_grey_images_become_normalised_rgb_at_the_model_size():
    x = torch.rand(2, 1, 8, 8)
    out = to_clip_input(x, (32, 32), MEAN, STD)
    assert out.shape == (2, 3, 32, 32)
    raw = out * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    assert torch.allclose(raw[:, 0], raw[:, 1], atol=1e-6) and raw.min() >= -1e-6
    ref = F.interpolate(x, size=(32, 32), mode="bicubic", align_corners=False).clamp(0, 1)
    assert torch.allclose(raw[:, :1], ref, atol=1e-5)


def test_shortest_side_resize_then_centre_crop():
    x = torch.rand(1, 3, 20, 40)
    out = to_clip_input(x, (10, 10), (0, 0, 0), (1, 1, 1))
    ref = F.interpolate(x, size=(10, 20), mode="bicubic", align_corners=False,
                        antialias=True)[..., 5:15].clamp(0, 1)
    assert torch.allclose(out, ref, atol=1e-6)
    with pytest.raises(UserError, match="images"):
        to_clip_input(torch.rand(4, 16), (10, 10), MEAN, STD)


def test_open_clip_encoder_is_seeded_and_keyed_by_its_weights(tiny_clip):
    a, b = OpenClipEncoder(tiny_clip, "none", seed=0), OpenClipEncoder(tiny_clip, "none", seed=0)
    c = OpenClipEncoder(tiny_clip, "none", seed=1)
    assert a.embed_dim == 64 and a.image_size == (32, 32) and a.pretrained == "none"
    assert a.key() == b.key() and a.key()["weights"] != c.key()["weights"]
    tokens = a.tokenize(["a photo of a digit 3."])
    assert tokens.shape == (1, 77) and tokens.dtype == torch.int64
    x = a.preprocess(torch.rand(3, 1, 8, 8))
    assert torch.equal(a.encode_image(x), b.encode_image(x)) and a.encode_image(x).shape == (3, 64)


def test_text_prototypes_are_normalised_means_of_normalised_prompts(tiny_clip):
    enc = OpenClipEncoder(tiny_clip, "none")
    names, templates = ["digit 1", "digit 7"], ("a photo of a {}.", "a drawing of {}")
    protos = text_prototypes(enc, names, templates)
    for c, name in enumerate(names):
        feats = [F.normalize(enc.encode_text(enc.tokenize([t.format(name)])), dim=1)[0]
                 for t in templates]
        ref = F.normalize(torch.stack(feats).mean(0), dim=0)
        assert torch.allclose(protos[c], ref, atol=1e-5)
    with pytest.raises(UserError, match="words.txt"):
        text_prototypes(enc, ["n01532829"], templates)


def test_prompt_templates():
    assert templates_for("mini-imagenet") == IMAGENET_TEMPLATES and len(IMAGENET_TEMPLATES) == 7
    assert templates_for("digits") == ("a photo of a {}.",)
    assert templates_for("folder", "oxford_pets") == ("a photo of a {}, a type of pet.",)
    assert templates_for("x", "a {} | art of {}") == ("a {}", "art of {}")
    with pytest.raises(UserError, match="templates"):
        templates_for("x", "no placeholder")


def test_unknown_models_and_unavailable_weights_are_user_errors(tiny_clip):
    with pytest.raises(UserError, match="unknown open_clip model"):
        OpenClipEncoder("no-such-model", "none")
    with pytest.raises(UserError, match="no pretrained weights 'nope'.*openai"):
        OpenClipEncoder("ViT-B-32", "nope")
    with pytest.raises(UserError, match="run once with a network.*--pretrained none"):
        OpenClipEncoder("RN50", "openai")  # offline: not in the cache, no download


def test_image_features_are_cached_per_split(tiny_clip, tmp_path):
    data = load_dataset("digits", "test", image_size=8)
    m = ProtoCLIP(clip_model=tiny_clip, pretrained="none")
    m.feature_cache = FeatureCache(tmp_path)
    device = torch.device("cpu")
    f1 = m.cached_features(data, device)
    f2 = m.cached_features(data, device)
    assert m.feature_cache.misses == 1 and m.feature_cache.hits == 1 and torch.equal(f1, f2)
    assert f1.shape == (len(data), 64)
    assert torch.allclose(f1.norm(dim=1), torch.ones(len(data)), atol=1e-5)
    other = ProtoCLIP(clip_model=tiny_clip, pretrained="none", seed=1)
    other.feature_cache = m.feature_cache
    other.cached_features(data, device)
    assert m.feature_cache.misses == 2  # other weights, other entry
