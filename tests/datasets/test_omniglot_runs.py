"""`omniglot-runs`: Lake et al.'s 20 one-shot runs, their fixed episodes, and the
modified-Hausdorff-distance anchor of the few-shot protocol card (section 8)."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial import cKDTree

from protobench.datasets import LabeledData, get_dataset, load_dataset
from protobench.datasets import omniglot as omni
from protobench.episodic import fixed_episodes
from protobench.errors import DataError

LAKE_MHD_ERRORS = [45, 35, 40, 25, 30, 15, 60, 35, 40, 55, 15, 70, 65, 35, 15, 25, 30, 40, 70, 30]


@pytest.fixture(scope="session")
def runs(omniglot_root):
    return load_dataset("omniglot-runs", "test", omniglot_root)


def test_runs_hold_20_runs_of_20_pairs(runs):
    assert runs.num_classes == 400 and len(runs) == 800
    assert runs.x.shape == (800, 1, 28, 28)
    assert (runs.class_counts == 2).all()
    assert runs.class_names[0] == "run01/class01" and runs.class_names[-1] == "run20/class20"
    assert runs.meta["alphabet"][0] == "Atlantean" and runs.meta["alphabet"][-1] == "Tibetan"


def test_fixed_episodes_use_every_training_class_once_per_run(runs):
    entry = get_dataset("omniglot-runs")
    assert entry.train_dataset == ("omniglot", "train")
    eps = fixed_episodes(entry, runs)  # the dataset's indices, wrapped by episodic
    assert (eps.episodes, eps.ways, eps.shots, eps.queries) == (20, 20, 1, 1)
    assert eps.dataset == "omniglot-runs" and eps.split == "test" and eps.seed is None
    assert eps.dataset_checksum == runs.checksum and eps.class_names == runs.class_names
    assert torch.equal(runs.labels[eps.support[..., 0]], eps.classes)
    assert torch.equal(runs.labels[eps.query[..., 0]], eps.classes)
    for r in range(20):
        names = [runs.class_names[c] for c in eps.classes[r].tolist()]
        assert names == [f"run{r + 1:02d}/class{z:02d}" for z in range(1, 21)]
    assert len(torch.unique(eps.indices)) == 800  # every sample used exactly once


def test_class_labels_pair_items_and_classes_one_to_one(omniglot_root):
    for run in range(1, 21):
        train, test, answer = omni.read_run(omniglot_root, run)
        assert train.shape == test.shape == (20, 105, 105) and train.dtype == bool
        assert sorted(answer.tolist()) == list(range(20))
        assert 0.01 < train.mean() < 0.2  # ink = True is the minority


def test_samples_are_the_processed_run_images(omniglot_root, runs):
    train, test, answer = omni.read_run(omniglot_root, 3)

    def processed(ink: np.ndarray) -> torch.Tensor:
        img = Image.fromarray(~ink).resize((28, 28), Image.Resampling.NEAREST)
        return torch.from_numpy(1.0 - np.asarray(img, dtype=np.float32))

    for z in (0, 7, 19):
        k = 2 * (40 + z)  # run 3, training class z
        assert torch.equal(runs.x[k, 0], processed(train[z]))
        assert torch.equal(runs.x[k + 1, 0], processed(test[list(answer).index(z)]))


def _centred_points(ink: np.ndarray) -> np.ndarray:
    pts = np.argwhere(ink).astype(np.float64)
    return pts - pts.mean(axis=0)


def _mean_nn(sources: list[np.ndarray], targets: list[np.ndarray]) -> np.ndarray:
    """``[len(sources), len(targets)]``: mean over target points of the distance to the
    nearest point of the source (one KD-tree query per source for all targets)."""
    lens = np.array([len(t) for t in targets])
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    points = np.concatenate(targets)
    out = np.empty((len(sources), len(targets)))
    for j, src in enumerate(sources):
        dist, _ = cKDTree(src).query(points, workers=-1)
        out[j] = np.add.reduceat(dist, starts) / lens
    return out


def test_modified_hausdorff_baseline_reproduces_lake_et_al(omniglot_root):
    errors = []
    for run in range(1, 21):
        train, test, answer = omni.read_run(omniglot_root, run)
        p = [_centred_points(a) for a in train]
        q = [_centred_points(a) for a in test]
        cost = np.maximum(_mean_nn(p, q).T, _mean_nn(q, p))  # [test item, training class]
        errors.append(100 - 5 * int((cost.argmin(axis=1) == answer).sum()))
    assert errors == LAKE_MHD_ERRORS
    assert np.mean(errors) == 38.75


def test_extracted_runs_folder_matches_the_zip(omniglot_root, runs, tmp_path):
    with zipfile.ZipFile(omniglot_root / "all_runs.zip") as z:
        z.extractall(tmp_path / "all_runs")
    assert load_dataset("omniglot-runs", "test", tmp_path).checksum == runs.checksum


def test_runs_episodes_refuse_other_data():
    other = LabeledData(x=torch.zeros(800, 4), labels=torch.arange(400).repeat_interleave(2),
                        class_names=tuple(map(str, range(400))), name="features", split="all")
    with pytest.raises(DataError, match="omniglot-runs"):
        omni.runs_episodes(other)


def test_missing_runs_error_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(omni, "BASE_URL", (tmp_path / "nowhere").as_uri() + "/")
    with pytest.raises(DataError, match="download failed.*--data-root"):
        load_dataset("omniglot-runs", "test", tmp_path)
    with pytest.raises(DataError, match="all_runs.zip"):
        omni.read_run(tmp_path, 1)


def test_runs_download_fetches_all_runs_zip(omniglot_root, runs, tmp_path, monkeypatch):
    served = tmp_path / "server" / "one-shot-classification"
    served.mkdir(parents=True)
    (served / "all_runs.zip").write_bytes((omniglot_root / "all_runs.zip").read_bytes())
    monkeypatch.setattr(omni, "BASE_URL", (tmp_path / "server").as_uri() + "/")
    root = tmp_path / "root"
    root.mkdir()
    assert load_dataset("omniglot-runs", "test", root).checksum == runs.checksum
    assert (root / "all_runs.zip").is_file()
