"""The three method protocols: few-shot, continual and OOD, with declared capabilities.

Every method is a :class:`Method` subclass registered with
``@register_method(name)``. Its constructor only stores keyword arguments, so
``get_params()`` round-trips: ``build_method(name, **m.get_params())`` rebuilds it. What a
method can do is declared as class attributes, checked when the class is registered and
when it is built, and read by the tasks; nothing is found by probing:

``tasks``
    the tasks it supports (``fewshot``, ``class-incremental``, ``task-incremental``,
    ``ood``); the CLI refuses others.
``distances``
    the distances its ``metric`` parameter accepts (empty: no metric parameter).
``trains``
    it learns from training data (meta-train split, stream, ID training set).
``transductive``
    it may look at the whole query set of an episode (a few-shot method whose rows then
    go to the ``fewshot-transductive`` board); instances may refine it per metric.
``scores_episodes``
    it scores episodes itself (it defines ``score_episodes``, e.g. Proto-CLIP's
    text prototypes) instead of the nearest-prototype rule under ``metric``.
``has_classifier``
    it has a classifier head, so logit-based OOD scores apply.
``keeps_data``
    a continual method that keeps samples of finished experiences (only the ``joint``
    upper bound).
``job_options``
    the job options it accepts by name (``train_steps``, ``train_ways``,
    ``train_shots``, ``train_queries``, ``epochs``, ``seed``, ``backbone``,
    ``clip_model``, ``pretrained``); a job passes an option only to a method that lists
    it, and refuses an explicit one (``--epochs``) the method does not list.

Few-shot methods work on features: ``fit`` (optional training on the meta-train split),
``features(data)`` -> ``[n, D]`` frozen embeddings and ``evaluate`` on episodes (by default
nearest prototype under ``metric``, through :mod:`protobench.evaluation`). Continual
methods see one experience at a time as tensors (``train_experience``, ``predict``); OOD
methods expose features (and logits when they have a head) for post-hoc scores.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from protobench.backbones import build_backbone, default_backbone
from protobench.datasets.base import ClassSet, LabeledData, SampleSource
from protobench.errors import UserError, check_input_shape
from protobench.evaluation.episodes import EpisodeResult, evaluate_episodes
from protobench.evaluation.geodesic import evaluate_geodesic
from protobench.evaluation.scored import evaluate_scored
from protobench.feature_cache import FeatureCache
from protobench.geometry.geodesic import GeodesicHead

JOB_OPTIONS = ("train_steps", "train_ways", "train_shots", "train_queries", "epochs", "seed",
               "backbone", "clip_model", "pretrained")
TASKS = ("fewshot", "class-incremental", "task-incremental", "ood")


class Method:
    """Base class: stores constructor arguments and declares capabilities."""

    name: ClassVar[str] = ""
    tasks: ClassVar[frozenset[str]] = frozenset()
    distances: ClassVar[tuple[str, ...]] = ("sqeuclidean",)
    trains: ClassVar[bool] = False
    transductive: ClassVar[bool] = False
    scores_episodes: ClassVar[bool] = False
    has_classifier: ClassVar[bool] = False
    keeps_data: ClassVar[bool] = False
    job_options: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str] = ""

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (scikit-learn style)."""
        import inspect

        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self"}

    @classmethod
    def capabilities(cls) -> dict[str, Any]:
        """The declared capabilities, for listings and records."""
        return {"tasks": sorted(cls.tasks), "distances": list(cls.distances),
                "trains": cls.trains, "transductive": cls.transductive,
                "scores_episodes": cls.scores_episodes, "has_classifier": cls.has_classifier,
                "keeps_data": cls.keeps_data, "job_options": list(cls.job_options)}

    @classmethod
    def describe(cls, params: dict[str, Any]) -> str:
        """A short summary of a row's parameters for boards (empty by default)."""
        return ""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def save(self, path: Any) -> None:
        torch.save({"method": self.name, "params": self.get_params(),
                    "state": self.state_dict()}, path)


def check_capabilities(cls: type[Method]) -> None:
    """Registration-time checks: declared capabilities are consistent with the class."""
    unknown_tasks = sorted(set(cls.tasks) - set(TASKS))
    if not cls.tasks or unknown_tasks:
        raise TypeError(f"{cls.__name__} declares tasks {sorted(cls.tasks)}; choose from "
                        f"{', '.join(TASKS)}")
    unknown = sorted(set(cls.job_options) - set(JOB_OPTIONS))
    if unknown:
        raise TypeError(f"{cls.__name__} declares unknown job options {unknown}; known: "
                        f"{', '.join(JOB_OPTIONS)}")
    import inspect

    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    missing = sorted(o for o in cls.job_options if o not in accepted and o != "epochs")
    if missing:
        raise TypeError(f"{cls.__name__} lists job options {missing} its constructor lacks")
    if cls.distances and "metric" not in accepted and "fewshot" in cls.tasks:
        raise TypeError(f"{cls.__name__} declares distances but takes no metric parameter")
    if cls.scores_episodes and not issubclass(cls, FewShotMethod):
        raise TypeError(f"{cls.__name__}: scores_episodes applies to few-shot methods")
    if cls.scores_episodes and "score_episodes" not in {k for c in cls.__mro__ for k in vars(c)}:
        raise TypeError(f"{cls.__name__} declares scores_episodes but defines no "
                        "score_episodes(support [e, N, K, D], query [e, N*Q, D], classes, "
                        "episode_ids) -> [e, N*Q, N]")
    if cls.has_classifier and not issubclass(cls, OODMethod):
        raise TypeError(f"{cls.__name__}: has_classifier applies to OOD methods")
    if cls.keeps_data and not issubclass(cls, ContinualMethod):
        raise TypeError(f"{cls.__name__}: keeps_data applies to continual methods")


class FewShotMethod(Method, ABC):
    """Support-then-query on frozen features."""

    tasks = frozenset({"fewshot"})
    metric: str = "sqeuclidean"
    episode_chunk: ClassVar[int] = 256  # episodes scored at once by score_episodes
    feature_cache: FeatureCache | None = None  # set by the runner; not a parameter
    geodesic: GeodesicHead | None = None  # the geodesic head when metric == "geodesic"
    trained_on: ClassSet | None = None  # meta-train classes of a trained encoder

    def fit(self, train: LabeledData | None, device: torch.device,
            progress: bool = True) -> dict[str, Any]:
        """Learn from the meta-train split; returns training statistics (may be empty)."""
        return {}

    @abstractmethod
    def features(self, data: LabeledData, device: torch.device) -> torch.Tensor:
        """Frozen embeddings ``[n, D]`` of every sample of ``data`` (CPU)."""

    def transform(self, features: torch.Tensor) -> torch.Tensor:
        """Post-processing applied to evaluation features (identity by default)."""
        return features

    def feature_key(self, data: LabeledData) -> str | None:
        """What determines ``features(data)`` besides the data (backbone, weights hash), or
        None when there is nothing worth caching (e.g. the data already are features)."""
        return None

    def cached_features(self, data: LabeledData, device: torch.device) -> torch.Tensor:
        """``features(data)``, through ``feature_cache`` when one is set and the method has a
        feature key: an unchanged encoder never re-runs on the same split."""
        key = self.feature_key(data) if self.feature_cache is not None else None
        if key is None or self.feature_cache is None:
            return self.features(data, device)
        return self.feature_cache.get(data, key, lambda: self.features(data, device),
                                      data.meta.get("load_options", {}))

    @property
    def needs_train_features(self) -> bool:
        """The evaluation needs the meta-train split's features (geodesic ``pool=train``)."""
        head = self.geodesic
        return head is not None and head.needs_train_pool and head.pool is None

    def set_train_features(self, features: torch.Tensor) -> None:
        """Give the evaluation the meta-train features it asked for."""
        if self.geodesic is not None:
            self.geodesic.set_pool(features)

    def board_task(self) -> str:
        """The board the rows go to: ``fewshot``, or ``fewshot-transductive`` when this
        instance looks at the whole query set (e.g. the geodesic ``geo_trans`` mode)."""
        if self.geodesic is not None:
            return self.geodesic.task
        return "fewshot-transductive" if self.transductive else "fewshot"

    def prepare_episodes(self, data: LabeledData, ways: int, shots: int, queries: int,
                         device: torch.device) -> dict[str, Any]:
        """Per-setting choices of a method that scores episodes itself (recorded)."""
        return {}

    def evaluate(self, test: LabeledData, features: torch.Tensor, episodes: Any,
                 device: torch.device, progress: bool = True
                 ) -> tuple[EpisodeResult, dict[str, Any]]:
        """Accuracy on every episode of ``episodes`` (features of ``test``) and the
        per-setting choices to record."""
        if self.scores_episodes:
            selected = self.prepare_episodes(test, episodes.ways, episodes.shots,
                                             episodes.queries, device)
            return (evaluate_scored(features, episodes, self, self.episode_chunk, device,
                                    progress), {"selected": selected})
        if self.geodesic is not None:
            return evaluate_geodesic(self.geodesic, features, episodes, device=device), {}
        return evaluate_episodes(features, episodes, metric=self.metric, device=device), {}


def seeded_encoder(backbone: str, in_shape: tuple[int, ...], seed: int
                   ) -> tuple[str, torch.nn.Module]:
    """``(resolved backbone name, encoder)``: ``"auto"`` picks the default for ``in_shape``;
    torch is seeded first, so every run of a seed starts from the same weights."""
    torch.manual_seed(seed)
    name = default_backbone(in_shape) if backbone == "auto" else backbone
    return name, build_backbone(name, in_shape)


Inputs = torch.Tensor | SampleSource
"""Samples of an experience: an in-memory tensor ``[n, ...]`` or a lazy source."""


@dataclass(frozen=True)
class ExperienceInfo:
    """What a method may know about the experience it trains on (no data)."""

    index: int
    """Position of the experience in the stream, from 0."""
    classes: tuple[int, ...]
    """Stream labels of the experience's new classes (a contiguous range)."""
    num_experiences: int
    seed: int
    """Seed of this experience (the run loop has already seeded torch with it)."""

    @property
    def num_old(self) -> int:
        """Classes of the earlier experiences (labels ``0..num_old-1``)."""
        return self.classes[0] if self.classes else 0

    @property
    def num_seen(self) -> int:
        """Classes seen once this experience is learned (labels ``0..num_seen-1``)."""
        return self.num_old + len(self.classes)

    @property
    def task_label(self) -> int:
        """Task id of the experience in the task-incremental view."""
        return self.index


class ContinualMethod(Method, ABC):
    """Class-/task-incremental methods.

    A continual method sees a class-incremental stream one experience at a time, as
    tensors: ``x`` ``[n, ...]`` (a tensor, or a lazy source indexed by an index tensor,
    e.g. image files) and ``y`` ``[n]`` int64 labels. Labels are stream labels: the classes
    of experience ``t`` are the contiguous range ``info.classes``, after the
    ``info.num_old`` classes of the earlier experiences, so a method grows its output by
    appending classes. It never receives a dataset or the stream itself, and must not keep
    samples or per-sample features of a finished experience (``keeps_data = False``); only
    the reference upper bound ``joint`` declares ``keeps_data = True``.

    ``predict(x)`` returns scores ``[B, num_seen]`` for every class seen so far (higher is
    more likely). The run loop takes the argmax over all of them (class-incremental) or
    over the classes of the sample's own experience (task-incremental).

    ``state_dict()`` holds everything needed to continue the stream exactly after a
    checkpoint; ``load_state_dict`` restores it into a freshly built method. The run loop
    seeds the global torch generator with ``info.seed`` before each experience.
    """

    tasks = frozenset({"class-incremental", "task-incremental"})
    distances = ()
    trains = True
    encoder: torch.nn.Module | None = None
    in_shape: tuple[int, ...] | None = None

    @abstractmethod
    def train_experience(self, x: Inputs, y: torch.Tensor, info: ExperienceInfo,
                         device: torch.device, progress: bool = True) -> dict[str, Any]:
        """Learn experience ``info`` from ``x`` ``[n, ...]``, ``y`` ``[n]``; returns statistics."""

    @abstractmethod
    def predict(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Scores ``[B, num_seen]`` (CPU, float) of a batch ``x`` ``[B, ...]``; eval mode."""

    @torch.no_grad()
    def features(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Penultimate features ``[B, D]`` (CPU, float) of a batch ``x`` ``[B, ...]``: the
        output of the method's ``encoder`` in eval mode (what open-world OOD scores use)."""
        if self.encoder is None:
            raise RuntimeError(f"{self.name} has no encoder yet (train an experience first) "
                               "or must override features()")
        self.encoder.to(device).eval()
        return self.encoder(x.to(device)).float().cpu()

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the stream after a checkpoint."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` into a method built with the same parameters."""

    def _new_encoder(self, in_shape: tuple[int, ...]) -> bool:
        """Build the seeded encoder (``self.backbone``, ``self.seed``) for ``in_shape`` unless
        one exists; True when it was built (the caller then resets what depends on it:
        heads, prototypes, optimiser). An existing encoder built for another shape is an
        error (:func:`~protobench.errors.check_input_shape`), never replaced."""
        if self.encoder is not None:  # trained or restored: never swapped for a fresh one
            check_input_shape(self.name, self.in_shape, in_shape)
            return False
        self.in_shape = tuple(in_shape)
        self.backbone_name, self.encoder = seeded_encoder(
            self.backbone, self.in_shape, self.seed)  # type: ignore[attr-defined]
        return True


class OODMethod(Method, ABC):
    """A model trained on in-distribution (ID) data that exposes features (and, when it has
    a classifier head, logits) for post-hoc OOD scores.

    ``fit(train)`` learns from labelled ID training data; ``features(x)`` returns the
    embeddings the feature-based scores (KNN, Mahalanobis, prototype, ...) work on;
    ``logits(x)`` the class scores the logit-based scores (MSP, max-logit, energy) need.
    A method without a classifier head (``has_classifier = False``, e.g. PALM) raises a
    :class:`~protobench.errors.UserError` from ``logits``. ``default_score`` names the score
    its paper reports. ``trained_config()`` describes the trained model (input shape,
    number of ID classes, resolved backbone) so a checkpoint is checked against the data.
    """

    tasks = frozenset({"ood"})
    distances = ()
    trains = True
    has_classifier = True
    default_score: ClassVar[str] = "msp"
    config_: dict[str, Any] = {}  # noqa: RUF012  (set per instance once trained)

    @abstractmethod
    def fit(self, train: LabeledData, device: torch.device, epochs: int | None = None,
            progress: bool = True) -> dict[str, Any]:
        """Train on labelled ID data ``train``; returns training statistics."""

    @abstractmethod
    def features(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Test-time embeddings ``[B, D]`` (CPU float32) of a batch ``x`` ``[B, ...]``;
        eval mode, batched internally."""

    def logits(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Class scores ``[B, C]`` (CPU float32) of a batch ``x`` ``[B, ...]``."""
        raise UserError(f"method {self.name!r} has no classifier head, so logit-based scores "
                        "(msp, max-logit, energy) do not apply; choose a feature score "
                        "(knn, mahalanobis, prototype, ...) or --method ce")

    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor | None:
        """Logits computed from :meth:`features` output (None: call :meth:`logits`)."""
        return None

    def trained_config(self) -> dict[str, Any]:
        """``in_shape``, ``num_classes`` and the resolved ``backbone`` once trained."""
        return dict(self.config_)

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the trained model (networks, prototypes, ...)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` into a method built with the same parameters."""
