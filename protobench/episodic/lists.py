"""The episode lists a few-shot job evaluates: seeded per shot, a replayed manifest, or
the dataset's fixed episodes, checked against the data before any training."""

from __future__ import annotations

from pathlib import Path

from protobench.datasets.base import LabeledData
from protobench.episodic.manifest import EpisodeList
from protobench.episodic.sampler import EpisodeSpec, check_spec, sample_episodes
from protobench.errors import UserError


def episode_lists(test: LabeledData, ways: int, shots: tuple[int, ...], queries: int,
                  episodes: int, seed: int, *, fixed: EpisodeList | None = None,
                  episodes_file: str | None = None, save_dir: str | None = None,
                  check_only: bool = False) -> dict[int, EpisodeList]:
    """Episodes per shot value for ``seed`` (``check_only``: validate, sample nothing)."""
    if episodes_file:
        if len(shots) != 1:
            raise UserError("--episodes-file replays one list: give a single --shots value")
        lst = EpisodeList.load(episodes_file)
        lst.check_against(test.name, test.split, test.checksum)
        return {shots[0]: lst}
    if fixed is not None:
        if tuple(shots) != (fixed.shots,) or ways not in (5, fixed.ways):
            raise UserError(f"{test.name} has fixed {fixed.ways}-way {fixed.shots}-shot "
                            f"episodes; use --ways {fixed.ways} --shots {fixed.shots}")
        return {fixed.shots: fixed}
    lists = {}
    for k in shots:
        spec = EpisodeSpec(ways, k, queries, episodes, seed)
        check_spec(test, spec)
        if check_only:
            continue
        indices, classes = sample_episodes(test, spec)
        lists[k] = EpisodeList(indices, classes, spec.shots, test.name, test.split,
                               test.checksum, spec.seed, test.class_names)
        if save_dir:
            out = Path(save_dir)
            out.mkdir(parents=True, exist_ok=True)
            lists[k].save(out / f"{test.name}_{test.split}_{ways}w{k}s{queries}q"
                                f"_{episodes}e_seed{seed}.json")
    return lists
