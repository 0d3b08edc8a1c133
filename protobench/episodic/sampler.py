"""Seeded, vectorised episode sampling.

``sample_episodes(data, spec)`` returns ``[E, N, K+Q]`` int64 sample indices
(support first, then queries, per class) and the ``[E, N]`` split-local class
ids. Episodes are drawn in fixed-size chunks; chunk ``c`` uses its own CPU
``torch.Generator`` seeded from ``(seed, c)``, so the result is bit-identical
in any process and on any device, and any chunk can be regenerated alone.

Per chunk (no Python loop over episodes or classes):
- classes: ``multinomial`` without replacement over the eligible classes;
- samples, ``m = K+Q`` of a class with ``n`` samples, all ``E*N`` rows at once:
  - when ``m(m-1)/2 <= 4 max_n`` (the usual case: 20 of 600), Floyd's algorithm,
    vectorised over rows with a loop over the ``m`` slots: step ``i`` draws
    ``t ~ U{0..j}`` with ``j = n-m+i`` and takes ``j`` instead when ``t`` is already
    chosen, which yields a uniform ``m``-subset from exactly ``m`` draws; a random
    permutation of the ``m`` slots (argsort of ``m`` keys) then makes the order, and
    so the support/query split, uniform. ~10x faster than keys over the whole row;
  - otherwise (``m`` close to ``n``) a random key per slot of the padded class table,
    padding pushed to +inf, and the ``m`` smallest keys via ``topk``.
  Both are uniform draws without replacement; support and query are disjoint. The
  choice depends only on shapes, so a seed gives the same episodes everywhere.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch

from protobench.datasets.base import LabeledData
from protobench.errors import SpecError
from protobench.utils import counter_seed

CHUNK = 4096


@dataclass(frozen=True)
class EpisodeSpec:
    """N-way K-shot Q-query, E episodes, from ``seed``."""

    ways: int
    shots: int
    queries: int = 15
    episodes: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("ways", "shots", "queries", "episodes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise SpecError(f"{name} must be a positive integer, got {value!r}")
        if self.ways < 2:
            raise SpecError("ways must be at least 2 for a classification episode")

    @property
    def per_class(self) -> int:
        return self.shots + self.queries


def check_spec(data: LabeledData, spec: EpisodeSpec) -> torch.Tensor:
    """The ``[C']`` eligible class ids, or a SpecError naming the classes that fall short."""
    counts = data.class_counts
    if spec.ways > data.num_classes:
        raise SpecError(
            f"{spec.ways}-way episodes need {spec.ways} classes but {data.name}/{data.split} "
            f"has {data.num_classes}; lower --ways to at most {data.num_classes}"
        )
    short = torch.nonzero(counts < spec.per_class).squeeze(1)
    if len(short):
        names = [data.class_names[c] for c in short[:5].tolist()]
        more = f" and {len(short) - 5} more" if len(short) > 5 else ""
        raise SpecError(
            f"shots+queries = {spec.per_class} exceeds the samples of {len(short)} class(es) of "
            f"{data.name}/{data.split} ({', '.join(names)}{more}: smallest has "
            f"{int(counts.min())}); lower --shots/--queries to at most {int(counts.min())} in all"
        )
    return torch.arange(data.num_classes)


def _chunk_generator(seed: int, chunk: int) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(counter_seed(seed, chunk) % (2**63 - 1))  # chunk c of seed s
    return g


def _sample_chunk(
    table: torch.Tensor, counts: torch.Tensor, eligible: torch.Tensor, spec: EpisodeSpec,
    n_episodes: int, g: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    weights = torch.ones(n_episodes, len(eligible))
    pick = torch.multinomial(weights, spec.ways, replacement=False, generator=g)  # [e, N]
    classes = eligible[pick]
    m, max_n = spec.per_class, table.shape[1]
    if m * (m - 1) // 2 <= 4 * max_n:
        pos = _floyd(counts[classes].reshape(-1), m, g).view(n_episodes, spec.ways, m)
    else:
        keys = torch.rand(n_episodes, spec.ways, max_n, generator=g)
        slot = torch.arange(max_n)
        keys.masked_fill_(slot >= counts[classes].unsqueeze(-1), float("inf"))
        _, pos = torch.topk(keys, m, dim=-1, largest=False, sorted=True)
    return table[classes.unsqueeze(-1), pos], classes


def _floyd(n: torch.Tensor, m: int, g: torch.Generator) -> torch.Tensor:
    """``[R, m]`` distinct positions in ``[0, n_r)`` per row, uniform subset in uniform order."""
    from protobench.episodic.floyd import floyd_slots, shuffle_slots  # numba: on first use

    u = torch.rand(len(n), m, generator=g, dtype=torch.float64)
    slots = floyd_slots(n, u)
    return shuffle_slots(slots, torch.rand(len(n), m, generator=g))


def iter_episode_chunks(
    data: LabeledData, spec: EpisodeSpec, workers: int = 1
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The episodes of ``spec`` chunk by chunk (``CHUNK`` episodes each), without ever holding
    all of them: what streaming evaluation uses to keep memory flat in ``E``. ``workers > 1``
    samples up to ``2 * workers`` chunks ahead on as many threads (each chunk has its own
    generator: the same chunks, in the same order)."""
    eligible = check_spec(data, spec)
    table, counts = data.class_table, data.class_counts
    starts = range(0, spec.episodes, CHUNK)

    def chunk(c: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = min(CHUNK, spec.episodes - starts[c])
        return _sample_chunk(table, counts, eligible, spec, n, _chunk_generator(spec.seed, c))

    if workers <= 1:
        yield from (chunk(c) for c in range(len(starts)))
        return
    with ThreadPoolExecutor(workers) as pool:
        ahead: deque[Future[tuple[torch.Tensor, torch.Tensor]]] = deque()
        for c in range(len(starts)):
            ahead.append(pool.submit(chunk, c))
            if len(ahead) >= 2 * workers:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()


def sample_episodes(data: LabeledData, spec: EpisodeSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """All episodes of ``spec`` on ``data``: ``([E, N, K+Q] indices, [E, N] classes)``, CPU int64."""
    indices = torch.empty(spec.episodes, spec.ways, spec.per_class, dtype=torch.int64)
    classes = torch.empty(spec.episodes, spec.ways, dtype=torch.int64)
    start = 0
    for idx, cls in iter_episode_chunks(data, spec):  # filled in place: no second copy
        indices[start:start + len(idx)] = idx
        classes[start:start + len(idx)] = cls
        start += len(idx)
    return indices, classes


def episode_labels(ways: int, queries: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[N*Q]`` class-major query labels ``0,0,..,1,1,..``."""
    return torch.arange(ways, device=device).repeat_interleave(queries)
