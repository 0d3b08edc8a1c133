"""End-to-end: `protobench fewshot --method proto-clip[-f]` on digits with a tiny random CLIP."""

from __future__ import annotations

from typer.testing import CliRunner

from protobench.cli import app
from protobench.tasks import ResultStore

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def common(tiny_clip, tmp_path, method):
    return ("fewshot", "-d", "digits", "-m", method, "--clip-model", tiny_clip,
            "--pretrained", "none", "-o", "image_size=8", "--store", tmp_path / "r.sqlite",
            "--cache-dir", tmp_path / "cache", "--no-progress", "-p", "search_episodes=20")


def test_proto_clip_cli_searches_alpha_beta_on_train_and_writes_a_row(tiny_clip, tmp_path):
    res = run(*common(tiny_clip, tmp_path, "proto-clip"), "--episodes", 40, "--shots", 1,
              "--shots", 5)
    assert res.exit_code == 0, res.output
    rows = ResultStore(tmp_path / "r.sqlite").records("fewshot/digits")
    assert [r.setting["shots"] for r in rows] == [1, 5]
    for r in rows:
        c = r.parameters()  # method parameters, then the job context
        assert c["clip_model"] == tiny_clip and c["pretrained"] == "none"
        assert c["selected"]["alpha"] in [i / 10 for i in range(11)]
        assert c["selected"]["selected_by"] == "grid search on digits/train"
        assert 0 <= r.metrics["accuracy"].value <= 1 and r.metrics["accuracy"].n == 40
    given = run(*common(tiny_clip, tmp_path, "proto-clip"), "--episodes", 40,
                "-p", "alpha=1.0", "-p", "beta=2")
    assert given.exit_code == 0, given.output
    last = ResultStore(tmp_path / "r.sqlite").records("fewshot/digits")[-1]
    assert last.config["selected"] == {"alpha": 1.0, "beta": 2.0, "selected_by": "given"}
    assert last.config["fit"]["test_features"] == "cached"


def test_proto_clip_f_cli_fine_tunes_per_episode_and_writes_a_row(tiny_clip, tmp_path):
    res = run(*common(tiny_clip, tmp_path, "proto-clip-f"), "--episodes", 3, "--shots", 2,
              "-p", "train_epochs=3", "-p", "adapter=fc")
    assert res.exit_code == 0, res.output
    (row,) = ResultStore(tmp_path / "r.sqlite").records("fewshot/digits")
    assert row.method == "proto-clip-f" and row.method_params["adapter"] == "fc"
    assert row.method_params["train_epochs"] == 3 and "beta" in row.config["selected"]
    small = run(*common(tiny_clip, tmp_path, "proto-clip-f"), "--ways", 4, "--episodes", 2)
    assert small.exit_code == 2 and "at least 5 classes" in small.output
    wrong = run("fewshot", "-d", "digits", "-m", "ncm", "--clip-model", "RN50",
                "--store", tmp_path / "r.sqlite")
    assert wrong.exit_code == 2 and "--clip-model applies to" in wrong.output
    assert len(ResultStore(tmp_path / "r.sqlite").records()) == 1  # failures write nothing
