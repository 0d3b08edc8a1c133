import json

import pytest
import torch

from protobench.episodic import EpisodeList, EpisodeSpec, make_episodes
from protobench.errors import DataError
from tests.conftest import make_features


def test_roundtrip_keeps_episodes_and_hash(tmp_path):
    data = make_features()
    eps = make_episodes(data, EpisodeSpec(5, 2, 3, 20, seed=1))
    h = eps.save(tmp_path / "e.json")
    back = EpisodeList.load(tmp_path / "e.json")
    assert torch.equal(back.indices, eps.indices) and torch.equal(back.classes, eps.classes)
    assert back.hash == h == eps.hash
    d = json.loads((tmp_path / "e.json").read_text())
    assert len(d["episodes"]) == 20 and len(d["episodes"][0]["support"][0]) == 2
    assert len(d["episodes"][0]["query"][0]) == 3


def test_tampered_manifest_is_refused(tmp_path):
    data = make_features()
    make_episodes(data, EpisodeSpec(5, 1, 3, 5)).save(tmp_path / "e.json")
    d = json.loads((tmp_path / "e.json").read_text())
    d["episodes"][0]["query"][0][0] += 1
    (tmp_path / "e.json").write_text(json.dumps(d))
    with pytest.raises(DataError, match="corrupt"):
        EpisodeList.load(tmp_path / "e.json")


def test_replay_on_other_data_is_refused():
    data = make_features()
    eps = make_episodes(data, EpisodeSpec(5, 1, 3, 5))
    eps.check_against(data.name, data.split, data.checksum)
    other = make_features(seed=1)
    with pytest.raises(DataError, match="same data version"):
        eps.check_against(other.name, other.split, other.checksum)


def test_streamed_hash_is_the_hash_of_the_whole_canonical_json(monkeypatch):
    from protobench.episodic import manifest as manifest_mod
    from protobench.utils import sha256_json

    monkeypatch.setattr(manifest_mod, "_HASH_CHUNK", 7)  # several chunks, a ragged last one
    data = make_features()
    eps = make_episodes(data, EpisodeSpec(4, 2, 3, 30, seed=1))
    assert eps.hash == sha256_json(eps.to_json_dict())
    one = make_episodes(data, EpisodeSpec(4, 2, 3, 1, seed=1))
    assert one.hash == sha256_json(one.to_json_dict())
