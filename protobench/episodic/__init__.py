"""Episode specs, seeded samplers, manifests and batched evaluation."""

from protobench.episodic.evaluate import (
    EpisodeResult,
    ci95,
    episode_logits,
    evaluate_episodes,
    evaluate_spec,
)
from protobench.episodic.manifest import EpisodeList
from protobench.episodic.sampler import EpisodeSpec, episode_labels, sample_episodes


def make_episodes(data, spec: EpisodeSpec) -> EpisodeList:
    """Sample ``spec`` on ``data`` and wrap it as a hashable :class:`EpisodeList`."""
    indices, classes = sample_episodes(data, spec)
    return EpisodeList(indices, classes, spec.shots, data.name, data.split, data.checksum,
                       spec.seed, data.class_names)


__all__ = [
    "EpisodeList", "EpisodeResult", "EpisodeSpec", "ci95", "episode_labels", "episode_logits",
    "evaluate_episodes", "evaluate_spec", "make_episodes", "sample_episodes",
]
