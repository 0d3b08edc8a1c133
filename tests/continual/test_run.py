"""The run loop: matrices filled correctly, checkpoints, and exact resumption."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from protobench.errors import UserError
from protobench.methods import build_method
from protobench.methods.continual_base import ContinualMethod, ExperienceInfo
from protobench.tasks.continual_run import read_checkpoint, run_stream

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[2]


class Lookup(ContinualMethod):
    """Remembers the label of every training image (a test double, not a method):
    predicts the remembered label, or the first class of the latest experience."""

    name = "lookup"

    def __init__(self) -> None:
        self.table: dict[bytes, int] = {}
        self.num_seen = 0
        self.last_first = 0

    def train_experience(self, x, y, info: ExperienceInfo, device, progress=True):
        self.table = {xi.numpy().tobytes(): int(yi) for xi, yi in zip(x, y)}  # current only
        self.num_seen, self.last_first = info.num_seen, info.classes[0]
        return {"seen": info.num_seen}

    def predict(self, x, device):
        scores = torch.zeros(len(x), self.num_seen)
        for i, xi in enumerate(x):
            scores[i, self.table.get(xi.numpy().tobytes(), self.last_first)] = 1
        return scores

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_matrices_of_a_method_that_forgets_everything(digits_stream):
    s = digits_stream
    # test on the TRAIN images so that the double's lookup table is exact for the current exp
    stream = type(s)(s.train, s.train, s.class_order, s.sizes, s.spec, "digits-train")
    res = run_stream(Lookup(), stream, CPU, progress=False)
    acc, til = res.accuracy, res.til_accuracy
    assert torch.equal(acc.diagonal(), torch.ones(5, dtype=torch.float64))
    for i in range(5):
        for j in range(i):  # old experiences are predicted as the newest experience's class
            assert acc[i, j] == 0
            # task-incremental: the argmax inside exp j's range is its first class (ties)
            first = (stream.train.labels[stream.experience(j).train_indices] == 2 * j)
            assert til[i, j] == pytest.approx(first.double().mean())
        assert torch.isnan(acc[i, i + 1:]).all()
    assert res.metrics["final_accuracy"] == pytest.approx(0.2)
    assert res.metrics["average_forgetting"] == pytest.approx(1.0)


class Stop(Exception):
    pass


def _finetune():
    return build_method("finetune", backbone="mlp", epochs=2, batch_size=32, seed=0)


def test_resume_after_an_interruption_gives_the_same_matrix(digits_stream, tmp_path):
    full = run_stream(_finetune(), digits_stream, CPU, seed=5, progress=False)

    def stop_after_first(t, acc):
        if t == 1:
            raise Stop

    with pytest.raises(Stop):
        run_stream(_finetune(), digits_stream, CPU, seed=5, run_dir=tmp_path, progress=False,
                   on_experience_end=stop_after_first)
    assert read_checkpoint(tmp_path)["completed"] == 2
    resumed = run_stream(_finetune(), digits_stream, CPU, seed=5, run_dir=tmp_path,
                         resume=True, progress=False)
    assert resumed.resumed_from == 2
    assert torch.equal(resumed.accuracy.nan_to_num(-1), full.accuracy.nan_to_num(-1))
    assert torch.equal(resumed.til_accuracy.nan_to_num(-1), full.til_accuracy.nan_to_num(-1))
    assert resumed.metrics == full.metrics
    assert len(resumed.fit_stats) == 5


def test_resume_refuses_other_options_or_no_checkpoint(digits_stream, tmp_path):
    with pytest.raises(UserError, match="no checkpoint"):
        run_stream(_finetune(), digits_stream, CPU, run_dir=tmp_path, resume=True)
    with pytest.raises(Stop):
        run_stream(_finetune(), digits_stream, CPU, run_dir=tmp_path, progress=False,
                   on_experience_end=lambda t, a: (_ for _ in ()).throw(Stop()))
    other = build_method("finetune", backbone="mlp", epochs=3, batch_size=32, seed=0)
    with pytest.raises(UserError, match="started with params="):
        run_stream(other, digits_stream, CPU, run_dir=tmp_path, resume=True)
    with pytest.raises(UserError, match="started with seed=0"):
        run_stream(_finetune(), digits_stream, CPU, seed=1, run_dir=tmp_path, resume=True)



def test_a_checkpoint_from_before_an_unset_option_existed_resumes(digits_stream, tmp_path):
    from protobench.tasks.continual_run import _write_checkpoint

    with pytest.raises(Stop):
        run_stream(_finetune(), digits_stream, CPU, run_dir=tmp_path, progress=False,
                   on_experience_end=lambda t, a: (_ for _ in ()).throw(Stop()))
    blob = read_checkpoint(tmp_path)
    params = blob["identity"]["params"]
    assert params["compile"] is None  # an option that is off
    blob["identity"]["params"] = {k: v for k, v in params.items() if v is not None}
    _write_checkpoint(tmp_path, blob)  # as written before the option existed
    resumed = run_stream(_finetune(), digits_stream, CPU, run_dir=tmp_path, resume=True,
                         progress=False)
    assert resumed.resumed_from == 1
    with pytest.raises(UserError, match="started with params="):  # a set option still counts
        run_stream(build_method("finetune", backbone="mlp", epochs=2, batch_size=32, seed=0,
                                compile=True), digits_stream, CPU, run_dir=tmp_path,
                   resume=True)

KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    from protobench.tasks.continual import ContinualConfig, run_continual

    def kill(t, acc):
        if t == 0:
            os.kill(os.getpid(), signal.SIGKILL)

    cfg = ContinualConfig(dataset="digits", method="finetune", experiences=3, epochs=2,
                          backbone="mlp", dataset_options={"image_size": 8}, device="cpu",
                          run_dir=sys.argv[1], store=None, progress=False, plot=False)
    run_continual(cfg, on_experience_end=kill)
""")


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGKILL"), reason="needs SIGKILL")
def test_killed_process_resumes_to_the_uninterrupted_matrix(tmp_path):
    from protobench.tasks.continual import ContinualConfig, run_continual

    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = "import torch; torch.set_num_threads(1)\n" + KILLED_RUN
    proc = subprocess.run([sys.executable, "-c", script, str(killed)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert read_checkpoint(killed)["completed"] == 1
    common = dict(dataset="digits", method="finetune", experiences=3, epochs=2, backbone="mlp",
                  dataset_options={"image_size": 8}, device="cpu", store=None,
                  progress=False, plot=False)
    with pytest.raises(UserError, match="pass --resume"):
        run_continual(ContinualConfig(**common, run_dir=str(killed)))
    resumed = run_continual(ContinualConfig(**common, run_dir=str(killed), resume=True))
    fresh = run_continual(ContinualConfig(**common, run_dir=str(tmp_path / "fresh")))
    assert resumed.result.resumed_from == 1
    assert torch.equal(resumed.result.accuracy.nan_to_num(-1),
                       fresh.result.accuracy.nan_to_num(-1))
    assert resumed.result.metrics == fresh.result.metrics


def test_few_steps_warning_counts_sgd_steps_of_the_smallest_experience(digits_stream):
    from protobench.methods import build_method
    from protobench.tasks.continual_run import few_steps_warning

    smallest = min(len(e.train_indices) for e in digits_stream)  # ~280 images of 2 digits
    steps = -(-smallest // 128)  # batch 128 -> 3 steps per epoch: too few
    text = few_steps_warning(build_method("prd", batch_size=128), digits_stream)
    assert text is not None and f"{smallest} training samples" in text
    assert f"gives {steps} SGD step(s)" in text and f"batch_size={smallest // 4}" in text
    assert few_steps_warning(build_method("prd", batch_size=smallest // 4), digits_stream) is None
    assert few_steps_warning(build_method("finetune", batch_size=64), digits_stream) is None
