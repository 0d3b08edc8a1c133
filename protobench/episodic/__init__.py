"""Episode specs, seeded samplers and manifests (evaluation: :mod:`protobench.evaluation`)."""

from __future__ import annotations

from protobench.episodic.manifest import EpisodeList
from protobench.episodic.sampler import EpisodeSpec, episode_labels, sample_episodes


def fixed_episodes(entry, data) -> EpisodeList | None:
    """The dataset's own episode list (e.g. Lake's 20 Omniglot runs), or None."""
    if entry.episodes is None:
        return None
    fixed = entry.episodes(data)
    return EpisodeList(fixed.indices, fixed.classes, fixed.shots, data.name, data.split,
                       data.checksum, None, data.class_names)


def make_episodes(data, spec: EpisodeSpec) -> EpisodeList:
    """Sample ``spec`` on ``data`` and wrap it as a hashable :class:`EpisodeList`."""
    indices, classes = sample_episodes(data, spec)
    return EpisodeList(indices, classes, spec.shots, data.name, data.split, data.checksum,
                       spec.seed, data.class_names)


__all__ = ["EpisodeList", "EpisodeSpec", "episode_labels", "fixed_episodes", "make_episodes",
           "sample_episodes"]
