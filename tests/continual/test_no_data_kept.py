"""No continual method keeps a training sample or per-sample feature of a finished experience.

After every experience of a short digits stream, each registered class-incremental method's
state is searched (``holds_rows``) for every training image of the experiences finished so
far, their 90/180/270-degree rotations, and their features under the method's encoder at
that moment. ``joint`` declares ``keeps_data = True`` and is the positive control: the same
check must find its samples.
"""

from __future__ import annotations

import pytest
import torch

from protobench.methods import build_method, list_methods
from protobench.methods.continual_base import holds_rows
from protobench.tasks.continual_run import run_stream

CPU = torch.device("cpu")
METHODS = [m.name for m in list_methods("class-incremental")
           if m.__module__.startswith("protobench.")]


def test_the_new_methods_are_covered():
    assert {"finetune", "joint", "napa-vq", "prd", "efc", "fecam", "lwf"} <= set(METHODS)


@torch.no_grad()
def rows_of(x: torch.Tensor, encoder: torch.nn.Module | None) -> list[torch.Tensor]:
    """Samples, their rotations, and (with an encoder) all of their features."""
    views = [x] + [torch.rot90(x, k, (-2, -1)) for k in (1, 2, 3)]
    rows = list(views)
    if encoder is not None:
        was = encoder.training
        encoder.eval()
        rows += [encoder(v) for v in views]
        encoder.train(was)
    return rows


SMALL = {"prd": {"projection_hidden": 64}}  # a smaller state to search; same mechanism


def found_in(state: dict, xs: list[torch.Tensor], encoder: torch.nn.Module | None) -> bool:
    rows = [rows_of(x, encoder) for x in xs]
    return any(holds_rows(state, torch.cat([views[k] for views in rows]))
               for k in range(len(rows[0])))


@pytest.mark.parametrize("name", METHODS)
def test_state_keeps_no_sample_nor_feature(name, digits_stream):
    method = build_method(name, backbone="mlp", epochs=1, seed=0, **SMALL.get(name, {}))
    stream = digits_stream
    finished: list[torch.Tensor] = []
    found: list[bool] = []

    def check(t: int, _acc: torch.Tensor) -> None:
        """The experience just finished, under the encoder that has just learned it."""
        x, _ = stream.inputs(stream.train, stream.experience(t).train_indices)
        finished.append(x)
        found.append(found_in(method.state_dict(), [x], getattr(method, "encoder", None)))

    run_stream(method, stream, CPU, progress=False, on_experience_end=check)
    assert len(found) == len(stream)
    # and the final state holds nothing of any experience
    found.append(found_in(method.state_dict(), finished, getattr(method, "encoder", None)))
    if method.keeps_data:
        assert all(found)  # the check does see kept data
    else:
        assert not any(found)
