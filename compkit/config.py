"""Typed competition config: frozen dataclasses loaded strictly from `competition.toml`."""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from compkit.errors import ConfigError, ParameterError
from compkit.names import name_problem
from compkit.schema import build, parse_memory

Task = Literal["match", "identify"]
FoldStrategy = Literal["stratified", "group", "stratified-group"]
Source = Literal["kaggle", "local", "synthetic"]
KnnBackend = Literal["auto", "torch", "faiss", "cuml"]
KNN_BACKENDS: tuple[str, ...] = get_args(KnnBackend)

CONFIG_FILE = "competition.toml"
PROJECT_FILE = "compkit.toml"  # in a project folder: competition = "SLUG", the default of -c
SHIPPED_DIR = Path(__file__).resolve().parent / "competitions"
SOURCE_CHECKOUT_DIR = Path(__file__).resolve().parent.parent / "competitions"


@dataclass(frozen=True)
class DataFiles:
    """Where the competition's files are, relative to the workspace's data folder."""

    train: str = "train.csv"
    test: str | None = None
    sample_submission: str = "sample_submission.csv"
    solution: str | None = None
    train_images: str = "train_images"
    test_images: str = "test_images"


@dataclass(frozen=True)
class Columns:
    """Column names of train/test files."""

    id: str
    label: str
    image: str | None = None
    text: str | None = None
    phash: str | None = None
    species: str | None = None


@dataclass(frozen=True)
class FoldSettings:
    """How the training rows are split into folds.

    `group` names a column whose values must not cross folds (an encounter, a camera, a seller).
    `unseen_fraction` (identify) holds whole individuals out in one fold each, so that about that share of
    the OOF queries are `new_individual`, as in the test set; it defaults to the competition's
    `expected_new_fraction`.
    `unseen_group_fraction` (stratified folds with a `group`) keeps only some groups whole, so that about that
    share of the OOF queries of seen individuals have no row of their group in the other folds: for a test set
    whose known individuals come from an encounter train lacks only part of the time.
    """

    n_splits: int = 5
    strategy: FoldStrategy | None = None
    seed: int = 42
    group: str | None = None
    unseen_fraction: float | None = None
    unseen_group_fraction: float | None = None

    def check(self) -> str | None:
        if self.n_splits < 2:
            return f"n_splits must be >= 2, got n_splits={self.n_splits}"
        if self.unseen_fraction is not None and not 0.0 <= self.unseen_fraction < 1.0:
            return f"unseen_fraction must be in [0, 1), got unseen_fraction={self.unseen_fraction}"
        if self.unseen_group_fraction is not None:
            if self.group is None:
                return "unseen_group_fraction needs group (the column whose values are kept whole)"
            if not 0.0 <= self.unseen_group_fraction <= 1.0:
                return f"unseen_group_fraction must be in [0, 1], got {self.unseen_group_fraction}"
        return None


@dataclass(frozen=True)
class DynamicMargin:
    """Per-class margins from class size, m_c = a * n_c ** (-power) + b (the Happywhale winners' rule)."""

    a: float = 0.5
    power: float = 0.25
    b: float = 0.05


@dataclass(frozen=True)
class HeadSettings:
    """Training head of a model: a margin head (ArcFace, sub-center ArcFace: scale, margin, easy_margin,
    subcenters) or the supervised contrastive loss "supcon" (temperature; needs the class-balanced sampler).

    The margin grows linearly from `margin_start` to `margin` over the first `margin_warmup_epochs` (the
    Shopee winners grew it from 0.2); `dynamic_margin` replaces the one margin by per-class ones from class
    size, scaled by the same warm-up. `init = "class_means"` (the default of margin heads) starts each class's
    centre (every sub-centre, slightly jittered) at the mean of its training rows' embeddings before the
    first step (weight imprinting, Qi et al. 2018), so a pretrained backbone's first gradients come from a
    head that already ranks the classes, not from random centres that would wreck its features.
    """

    type: Literal["arcface", "subcenter_arcface", "supcon"] = "arcface"
    init: Literal["random", "class_means"] | None = None
    scale: float = 30.0
    margin: float = 0.5
    margin_start: float | None = None
    margin_warmup_epochs: float = 0.0
    dynamic_margin: DynamicMargin | None = None
    easy_margin: bool = False
    subcenters: int = 3
    temperature: float = 0.1

    def margin_at(self, epoch: int) -> float:
        """Return the margin of `epoch` on the warm-up schedule (the full margin once warmed up)."""
        if self.margin_start is None or epoch >= self.margin_warmup_epochs:
            return self.margin
        return self.margin_start + (self.margin - self.margin_start) * epoch / self.margin_warmup_epochs

    def check(self) -> str | None:
        problem = _first(_bound_problem(self, "> 0", ("scale", "temperature"), lambda v: v > 0),
                         _bound_problem(self, "in [0, pi/2]", ("margin", "margin_start"), lambda v: 0 <= v <= 1.5708),
                         _bound_problem(self, ">= 1", ("subcenters",), lambda v: v >= 1))
        if problem:
            return problem
        if self.margin_warmup_epochs < 0:
            return f"margin_warmup_epochs must be >= 0, got {self.margin_warmup_epochs}"
        if self.margin_start is not None and self.margin_warmup_epochs == 0:
            return "margin_start needs margin_warmup_epochs > 0 (the epochs over which the margin grows)"
        if self.init == "class_means" and self.type == "supcon":
            return "init = 'class_means' needs a margin head (supcon has no class centres)"
        return None

    @property
    def imprints_class_means(self) -> bool:
        """Return whether the class centres start at the class means (margin heads, unless init = 'random')."""
        return self.type != "supcon" and self.init != "random"


@dataclass(frozen=True)
class TrainSettings:
    """How a neural model is trained on each fold.

    `sampler = "class_balanced"` fills each batch with `images_per_class` images of each of its classes
    (repeating the images of smaller classes), so every batch holds positives. The held-out fold is scored
    (and the best checkpoint chosen) from epoch `score_from_epoch` on, and always after the last epoch.
    `recalibrate_bn` re-estimates BatchNorm statistics on the un-augmented training rows before each scoring
    (one extra forward pass over them): from random weights the running averages lag far behind; a
    pretrained encoder with only a BatchNorm neck can skip it.
    """

    epochs: int = 10
    batch_size: int = 64
    sampler: Literal["random", "class_balanced"] = "random"
    images_per_class: int = 2
    score_from_epoch: int = 0
    recalibrate_bn: bool = True
    lr: float = 1e-3
    head_lr: float | None = None
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    freeze_backbone_epochs: int = 0  # train only the neck and head for these first epochs
    grad_accum: int = 1
    clip_grad: float | None = None
    ema_decay: float | None = None
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    channels_last: bool = True
    deterministic: bool = False
    seed: int = 42
    num_workers: int | None = None  # DataLoader workers; None: cores - 1 on CUDA, 0 (the main process) on CPU
    checkpoint_minutes: float = 5.0  # a mid-epoch resume state this often on long epochs (0: at epoch ends only)

    def check(self) -> str | None:
        if self.epochs < 0:
            return f"epochs must be >= 0 (0: zero-shot, the pretrained features as they are), got epochs={self.epochs}"
        problem = _first(
            _bound_problem(self, ">= 1", ("batch_size", "grad_accum"), lambda v: v >= 1),
            _bound_problem(self, "> 0", ("lr", "head_lr", "clip_grad"), lambda v: v > 0),
            _bound_problem(self, ">= 0", ("score_from_epoch", "weight_decay", "warmup_epochs",
                                          "freeze_backbone_epochs", "num_workers", "checkpoint_minutes"),
                           lambda v: v >= 0),
            _bound_problem(self, "in [0, 1)", ("ema_decay",), lambda v: 0 <= v < 1),
        )
        if problem:
            return problem
        if self.sampler == "class_balanced" and not 1 <= self.images_per_class <= self.batch_size:
            return (f"images_per_class must be between 1 and batch_size={self.batch_size}, "
                    f"got images_per_class={self.images_per_class}")
        return None


def _bound_problem(settings, rule: str, names: tuple[str, ...], allowed) -> str | None:
    """Return "<name> must be <rule>, got <value>" for the first of `names` whose value `allowed` refuses."""
    for name in names:
        value = getattr(settings, name)
        if value is not None and not allowed(value):
            return f"{name} must be {rule}, got {name}={value!r}"
    return None


def _first(*problems: str | None) -> str | None:
    return next((problem for problem in problems if problem), None)


def _check_head_fits_sampler(head: HeadSettings, train: TrainSettings) -> str | None:
    if head.type == "supcon" and (train.sampler != "class_balanced" or train.images_per_class < 2):
        return ("head type 'supcon' learns from pairs within a batch: set train.sampler = 'class_balanced' "
                f"and train.images_per_class >= 2 (got sampler={train.sampler!r}, "
                f"images_per_class={train.images_per_class})")
    return None


@dataclass(frozen=True)
class AugmentSettings:
    """Training-time augmentation of an image model (all of it enters the fingerprints).

    `hflip` is a probability: 0 where a mirror image is another identity (a fin seen from the other side).
    `crop_scale` is the random-resized-crop's area range, `color_jitter` its strength (0 off), `rotation` the
    largest random rotation in degrees (0 off).
    """

    hflip: float = 0.5
    crop_scale: tuple[float, float] = (0.6, 1.0)
    color_jitter: float = 0.2
    rotation: float = 0.0

    def check(self) -> str | None:
        if not 0.0 <= self.hflip <= 1.0:
            return f"hflip is a probability, got hflip={self.hflip}"
        low, high = self.crop_scale
        if not 0.0 < low <= high <= 1.0:
            return f"crop_scale must satisfy 0 < low <= high <= 1, got crop_scale={list(self.crop_scale)}"
        if self.color_jitter < 0 or self.rotation < 0:
            return f"color_jitter and rotation must be >= 0, got {self.color_jitter} and {self.rotation}"
        return None


# the implementation of AugmentSettings (compkit.models.augment), in every trained image model's fingerprint:
# bumped when the same settings augment differently, so folds trained by the old code are stale
AUGMENT_VERSION = "batched-1"

TTA_CHOICES = ("flip",)


@dataclass(frozen=True)
class PseudoLabel:
    """identify: train also on the test images another model predicts confidently (the Happywhale winners'
    pseudo-labelling round): those whose top-1 score in `submissions/top1/<source>.csv` is above `threshold`,
    labelled as that individual (compkit.training.pseudo)."""

    source: str
    threshold: float = 0.7

    def check(self) -> str | None:
        if not -1.0 <= self.threshold <= 1.0:
            return f"threshold must be in [-1, 1] (a top-1 score), got {self.threshold}"
        return None


@dataclass(frozen=True)
class ImageModel:
    name: str
    kind: Literal["image"]
    backbone: str
    pretrained: bool = False
    pretrained_path: str | None = None
    image_size: int = 224
    embedding_dim: int = 512
    pooling: Literal["gem", "avg"] = "gem"
    head: HeadSettings = field(default_factory=HeadSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    tta: tuple[Literal["flip"], ...] = ()  # "flip": embed the mean of an image's and its mirror's embeddings
    pseudo_label: PseudoLabel | None = None

    def check(self) -> str | None:
        return _first(_bound_problem(self, ">= 8", ("image_size",), lambda v: v >= 8),
                      _bound_problem(self, ">= 1", ("embedding_dim",), lambda v: v >= 1),
                      _check_head_fits_sampler(self.head, self.train))


@dataclass(frozen=True)
class TextModel:
    name: str
    kind: Literal["text"]
    encoder: str
    max_length: int = 64
    embedding_dim: int = 256
    head: HeadSettings = field(default_factory=HeadSettings)
    train: TrainSettings = field(default_factory=TrainSettings)

    def check(self) -> str | None:
        return _first(_bound_problem(self, ">= 1", ("max_length", "embedding_dim"), lambda v: v >= 1),
                      _check_head_fits_sampler(self.head, self.train))


@dataclass(frozen=True)
class TfidfModel:
    name: str
    kind: Literal["tfidf"]
    analyzer: Literal["word", "char", "char_wb"] = "word"
    ngram_range: tuple[int, int] = (1, 1)
    max_features: int | None = None
    min_df: int = 1
    sublinear_tf: bool = True
    backend: Literal["auto", "sklearn", "cuml"] = "auto"  # auto: cuML on a GPU when it has these settings

    def check(self) -> str | None:
        low, high = self.ngram_range
        if not 1 <= low <= high:
            return f"ngram_range must be [low, high] with 1 <= low <= high, got [{low}, {high}]"
        return _bound_problem(self, ">= 1", ("max_features", "min_df"), lambda v: v >= 1)


@dataclass(frozen=True)
class PhashModel:
    name: str
    kind: Literal["phash"]


@dataclass(frozen=True)
class UnionModel:
    """match: the union of the members' match lists, one threshold per member, tuned jointly (min2 on top)."""

    name: str
    kind: Literal["union"]
    members: tuple[str, ...]


@dataclass(frozen=True)
class ConcatModel:
    """The members' normalised embeddings concatenated with weights: a weighted mean of their cosine
    similarities, post-processed like one model. No `weights`: tuned on OOF with the thresholds."""

    name: str
    kind: Literal["concat"]
    members: tuple[str, ...]
    weights: tuple[float, ...] = ()


@dataclass(frozen=True)
class ScoreModel:
    """identify: each member's per-individual scores (best similarity among its top_n neighbours) averaged
    with weights, then new_individual and the top 5. No `weights`: tuned on OOF with the threshold."""

    name: str
    kind: Literal["score"]
    members: tuple[str, ...]
    weights: tuple[float, ...] = ()


ModelConfig = ImageModel | TextModel | TfidfModel | PhashModel | UnionModel | ConcatModel | ScoreModel
CombinedModel = UnionModel | ConcatModel | ScoreModel
COMBINED_KINDS = ("union", "concat", "score")
NEURAL_KINDS = ("image", "text")


def is_zero_shot(model) -> bool:
    """Return whether a neural model embeds with its pretrained backbone's pooled features, untrained (epochs 0)."""
    return model.kind in NEURAL_KINDS and model.train.epochs == 0


def is_trained(model) -> bool:
    """Return whether the model has a training stage: a neural model with epochs > 0."""
    return model.kind in NEURAL_KINDS and model.train.epochs > 0
RESERVED_NAMES = ("ensemble", "ledger")  # files compkit writes beside the models' own
COMBINED_TASKS = {"union": ("match",), "concat": ("match", "identify"), "score": ("identify",)}


@dataclass(frozen=True)
class PostprocessSpace:
    """Post-processing parameters and the ranges tuning searches over.

    `knn_weight` (identify, models trained with a margin head) is the range of r in the fused score
    r * kNN + (1 - r) * head; [1, 1] turns the fusion off.
    """

    threshold: tuple[float, float] = (0.2, 0.95)
    default_threshold: float = 0.5
    max_matches: int = 50
    top_n: int = 100
    min2: bool = False
    min2_threshold: tuple[float, float] = (0.0, 0.9)
    blend_stages: int = 0
    blend_threshold: float = 0.6
    new_individual: Literal["threshold", "fraction"] = "threshold"
    new_individual_fraction: tuple[float, float] = (0.0, 0.8)
    new_individual_per_species: bool = False
    species_min_queries: int = 200
    knn_weight: tuple[float, float] = (0.0, 1.0)
    # match, opt-in: keep a pair only when each is among the other's top-r others, r tuned in this range
    # (compkit.postprocess.mutual); and lists trimmed or grown towards the training group sizes, with a tuned
    # weight (compkit.postprocess.group_sizes)
    mutual_top: tuple[int, int] | None = None
    calibrate_group_sizes: bool = False
    # match: agglomerative merging to a tuned mean cluster size, singletons attached to their nearest cluster
    # (compkit.postprocess.clusters); alpha-QE / alpha-DBA re-embed rows from their top-k before the search
    # (compkit.retrieval.expansion; k = 0: off)
    agglomerate: bool = False
    cluster_size: tuple[float, float] = (1.0, 10.0)
    attach_threshold: tuple[float, float] = (0.0, 1.0)
    qe_k: int = 0
    qe_alpha: float = 3.0
    dba_k: int = 0
    dba_alpha: float = 3.0
    # identify: confident queries (top-1 score above a tuned gallery_threshold) join the gallery as their
    # predicted individual for a second search (compkit.postprocess.query_gallery)
    test_in_gallery: bool = False
    gallery_threshold: tuple[float, float] = (0.5, 1.0)

    def check(self) -> str | None:
        if not 0 <= self.blend_stages <= 3:
            return f"blend_stages must be between 0 and 3, got {self.blend_stages}"
        if self.new_individual_per_species and self.new_individual != "threshold":
            return "new_individual_per_species needs new_individual = 'threshold'"
        if self.species_min_queries < 1:
            return f"species_min_queries must be >= 1, got {self.species_min_queries}"
        for name in ("threshold", "min2_threshold", "new_individual_fraction", "knn_weight", "gallery_threshold"):
            low, high = getattr(self, name)
            if not low <= high:
                return f"{name} must be [low, high] with low <= high, got [{low}, {high}]"
        for name in ("threshold", "min2_threshold", "gallery_threshold"):  # cosine similarities
            low, high = getattr(self, name)
            if not -1.0 <= low <= high <= 1.0:
                return f"{name} must lie within [-1, 1] (similarities are cosines), got [{low}, {high}]"
        if not -1.0 <= self.default_threshold <= 1.0:
            return f"default_threshold must be in [-1, 1] (a cosine similarity), got {self.default_threshold}"
        if not 0.0 <= self.new_individual_fraction[0] <= self.new_individual_fraction[1] <= 1.0:
            return f"new_individual_fraction must lie within [0, 1], got {list(self.new_individual_fraction)}"
        problem = _clustering_problem(self)
        if problem:
            return problem
        problem = _bound_problem(self, ">= 1", ("max_matches", "top_n"), lambda v: v >= 1)
        if problem:
            return problem
        if not 0.0 <= self.knn_weight[0] <= self.knn_weight[1] <= 1.0:
            return f"knn_weight must lie within [0, 1], got {list(self.knn_weight)}"
        if self.mutual_top is not None and not 1 <= self.mutual_top[0] <= self.mutual_top[1]:
            return f"mutual_top must be [low, high] with 1 <= low <= high, got {list(self.mutual_top)}"
        return None


def _clustering_problem(space: PostprocessSpace) -> str | None:
    """Return what is wrong with the agglomeration and expansion settings, or None."""
    if not 1.0 <= space.cluster_size[0] <= space.cluster_size[1] <= space.max_matches:
        return f"cluster_size must lie within [1, max_matches={space.max_matches}], got {list(space.cluster_size)}"
    if not -1.0 <= space.attach_threshold[0] <= space.attach_threshold[1] <= 1.0:
        return f"attach_threshold must lie within [-1, 1] (a cosine similarity), got {list(space.attach_threshold)}"
    for name in ("qe_k", "dba_k"):
        if getattr(space, name) < 0:
            return f"{name} must be >= 0 (0: off), got {getattr(space, name)}"
    for name in ("qe_alpha", "dba_alpha"):
        if getattr(space, name) < 0:
            return f"{name} must be >= 0, got {getattr(space, name)}"
    return None


@dataclass(frozen=True)
class NeighborSettings:
    """Which dense kNN search every neighbour search uses (`--knn` overrides it for one command).

    "auto" picks the fastest exact search the machine can run (see `compkit.neighbors.get_backend`). Every
    backend is an exact cosine top-k, so results, and every artifact's fingerprint, are the same with each.
    `memory` ("2GB", "512MiB" or bytes) bounds what a dense search holds besides its embeddings and results;
    `scheduler` (a dask.distributed address) shards every dense search over that cluster; `index = "ivf"`
    trades exactness for time (faiss IVF, `ivf_lists` cells, 0: 4 sqrt(n); `ivf_probes` scanned per query),
    reporting recall@k against exact on `recall_sample` queries. Neither sharding nor memory changes a result.
    """

    backend: KnnBackend = "auto"
    memory: str | int = "2GB"
    scheduler: str = ""
    index: Literal["exact", "ivf"] = "exact"
    ivf_lists: int = 0
    ivf_probes: int = 16
    recall_sample: int = 1000

    def check(self) -> str | None:
        try:
            parse_memory(self.memory)
        except ConfigError as error:
            return str(error)
        if self.ivf_lists < 0 or self.ivf_probes < 1 or self.recall_sample < 0:
            return (f"ivf_lists must be >= 0, ivf_probes >= 1 and recall_sample >= 0, got {self.ivf_lists}, "
                    f"{self.ivf_probes} and {self.recall_sample}")
        return None


@dataclass(frozen=True)
class EmbeddingSettings:
    """How cached embeddings are stored, and how the test set is embedded on a Dask cluster.

    `test_shard_rows` > 0: on a cluster (`--scheduler`), each fold model embeds the test set as tasks of about
    that many rows (whole embedding batches, so the result is the same bytes), spread over the workers.
    """

    dtype: Literal["float32", "float16"] = "float32"
    test_shard_rows: int = 0

    def check(self) -> str | None:
        if self.test_shard_rows < 0:
            return f"test_shard_rows must be >= 0 (0: one task per fold), got {self.test_shard_rows}"
        return None


@dataclass(frozen=True)
class SubmissionFormat:
    id_column: str
    prediction_column: str
    max_predictions: int
    new_individual: str = "new_individual"


@dataclass(frozen=True)
class SyntheticSettings:
    """Parameters of a bundled demo competition's generated data."""

    seed: int = 0
    n_train_groups: int = 400
    n_test_groups: int = 150
    image_size: int = 64


@dataclass(frozen=True)
class CompetitionConfig:
    slug: str
    task: Task
    columns: Columns
    submission: SubmissionFormat
    title: str = ""
    kaggle: str | None = None
    source: Source = "kaggle"
    path: str | None = None  # a local source's folder or zip (relative: to the competition folder)
    in_place: bool | None = None  # local folder: use its files in place, or copy them (false); unset: by writability
    code_competition: bool = False  # notebooks only: `submit` refuses a CSV upload and points at `submit --kernel`
    expected_new_fraction: float | None = None
    data: DataFiles = field(default_factory=DataFiles)
    fixes: dict[str, dict[str, str]] = field(default_factory=dict)
    folds: FoldSettings = field(default_factory=FoldSettings)
    models: tuple[ModelConfig, ...] = ()
    postprocess: PostprocessSpace = field(default_factory=PostprocessSpace)
    neighbors: NeighborSettings = field(default_factory=NeighborSettings)
    embeddings: EmbeddingSettings = field(default_factory=EmbeddingSettings)
    synthetic: SyntheticSettings | None = None

    def check(self) -> str | None:
        problem = name_problem("slug", self.slug)
        if problem:
            return problem
        for index, model in enumerate(self.models):
            problem = name_problem(f"models[{index}].name", model.name)
            if problem:
                return problem
            if model.name in RESERVED_NAMES:
                return f"models[{index}].name {model.name!r} is reserved (compkit's own {model.name}.csv)"
        names = [m.name for m in self.models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            return f"models: duplicate model name {duplicates[0]!r}"
        if self.source == "synthetic" and self.synthetic is None:
            return "source = 'synthetic' needs a [synthetic] table"
        if self.source == "kaggle" and not self.kaggle:
            return "source = 'kaggle' needs kaggle = '<competition slug on Kaggle>'"
        if self.task == "identify" and self.data.test is None and not self.data.sample_submission:
            return "data: identify needs data.test or data.sample_submission to list the test images"
        if self.expected_new_fraction is not None and not 0.0 <= self.expected_new_fraction < 1.0:
            return f"expected_new_fraction must be in [0, 1), got {self.expected_new_fraction}"
        if self.task != "identify" and self.folds.unseen_fraction is not None:
            return "folds.unseen_fraction needs task = 'identify' (match folds hold out whole products already)"
        if self.postprocess.new_individual_per_species and (self.task != "identify" or not self.columns.species):
            return "postprocess.new_individual_per_species needs task = 'identify' and columns.species"
        if self.task != "identify" and any(getattr(m, "pseudo_label", None) for m in self.models):
            return "pseudo_label needs task = 'identify' (it reads an identify model's top-1 test predictions)"
        return _check_combined_models(self)

    @property
    def fold_strategy(self) -> FoldStrategy:
        """Return the fold strategy, defaulting by task (group for match, stratified for identify)."""
        if self.folds.strategy is not None:
            return self.folds.strategy
        return "group" if self.task == "match" else "stratified"

    @property
    def embedding_models(self) -> tuple[ModelConfig, ...]:
        """Return the models that are fitted and embedded: all but the union/concat/score combinations."""
        return tuple(model for model in self.models if model.kind not in COMBINED_KINDS)

    def model(self, name: str) -> ModelConfig:
        """Return the model called `name`, or raise ConfigError listing the declared ones."""
        for model in self.models:
            if model.name == name:
                return model
        declared = ", ".join(m.name for m in self.models) or "none"
        raise ConfigError(f"unknown model {name!r} for {self.slug} (declared: {declared})")


def _check_combined_models(config: CompetitionConfig) -> str | None:
    """Return why a union/concat/score model cannot combine its members, or None."""
    embedding_models = {m.name for m in config.models if m.kind not in COMBINED_KINDS}
    for model in config.models:
        if model.kind not in COMBINED_KINDS:
            continue
        where = f"models: model {model.name!r} of kind {model.kind!r}"
        if config.task not in COMBINED_TASKS[model.kind]:
            return f"{where} applies to {' and '.join(COMBINED_TASKS[model.kind])} competitions, not {config.task}"
        if len(set(model.members)) != len(model.members) or len(model.members) < 2:
            return f"{where} needs at least two distinct members, got {list(model.members)}"
        unknown = [name for name in model.members if name not in embedding_models]
        if unknown:
            return (f"{where}: member {unknown[0]!r} is not an embedding model of this config "
                    f"(choose from: {', '.join(sorted(embedding_models)) or 'none'})")
        weights = getattr(model, "weights", ())
        if weights and (len(weights) != len(model.members) or min(weights) < 0 or not any(weights)):
            return (f"{where}: weights must be one non-negative number per member, not all zero "
                    f"(got {list(weights)} for {len(model.members)} members)")
    return None


def search_dirs() -> list[Path]:
    """Return the folders searched for competitions, in order: ./competitions, then the shipped ones."""
    dirs = [Path.cwd() / "competitions", SHIPPED_DIR, SOURCE_CHECKOUT_DIR]
    unique: list[Path] = []
    for directory in dirs:
        if directory.resolve() not in [d.resolve() for d in unique]:
            unique.append(directory)
    return unique


def resolve_config_path(competition: str) -> Path:
    """Return the competition.toml for a slug or a path to a folder or file."""
    candidate = Path(competition)
    if candidate.suffix == ".toml" and candidate.is_file():
        return candidate
    if (candidate / CONFIG_FILE).is_file() and ("/" in competition or candidate.is_absolute()):
        return candidate / CONFIG_FILE
    for directory in search_dirs():
        path = directory / competition / CONFIG_FILE
        if path.is_file():
            return path
    if (candidate / CONFIG_FILE).is_file():
        return candidate / CONFIG_FILE
    known = ", ".join(available_competitions()) or "none"
    raise ConfigError(f"unknown competition {competition!r}: no {CONFIG_FILE} found (available: {known})")


def available_competitions() -> list[str]:
    """Return the slugs of every competition found in the search folders."""
    slugs = set()
    for directory in search_dirs():
        if directory.is_dir():
            slugs.update(p.parent.name for p in directory.glob(f"*/{CONFIG_FILE}"))
    return sorted(slugs)


def project_competition(start: Path | None = None) -> str | None:
    """Return the `competition` of the nearest compkit.toml in `start` (default: the working folder) or above.

    A relative path in it is resolved against the file's folder; None when there is no such file.
    """
    folder = (start or Path.cwd()).resolve()
    for directory in (folder, *folder.parents):
        path = directory / PROJECT_FILE
        if not path.is_file():
            continue
        try:
            value = tomllib.loads(path.read_text(encoding="utf-8")).get("competition")
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path}: invalid TOML: {error}") from None
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{path}: needs competition = \"SLUG\" (a slug or a path to its folder)")
        relative = directory / value
        return str(relative) if (relative / CONFIG_FILE).is_file() and ("/" in value or value == ".") else value
    return None


def load_config(
    competition: str, *, overrides: Sequence[str] = (), models: Sequence[str] | None = None
) -> CompetitionConfig:
    """Return the typed config of a competition given by slug or path.

    `overrides` are `KEY=VALUE` settings applied over the file (see `apply_overrides`); `models` keeps only
    the named models (and the members of named combinations), as `select_models` does.
    """
    path = resolve_config_path(competition)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    config = parse_config(text, source=path, overrides=overrides)
    if config.path:  # a local source's folder, relative to the competition folder
        config = dataclasses.replace(config, path=str(path.parent / Path(config.path).expanduser()))
    return select_models(config, models) if models else config


def parse_config(text: str, *, source: Path | str, overrides: Sequence[str] = ()) -> CompetitionConfig:
    """Return the typed config parsed from TOML text; errors name `source` and the key.

    Models with `enabled = false` are checked like the others, then left out of the config.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: invalid TOML: {error}") from None
    if overrides:
        raw = apply_overrides(raw, overrides)
        source = f"{source} with --set {' '.join(overrides)}"
    raw, disabled = _split_disabled(raw, source)
    config = build(CompetitionConfig, raw, key="", source=source)
    _check_columns(config, source)
    if not disabled:
        return config
    kept = tuple(model for model in config.models if model.name not in disabled)
    for model in kept:
        off = [name for name in getattr(model, "members", ()) if name in disabled]
        if off:
            raise ConfigError(f"{source}: models: model {model.name!r} combines {off[0]!r}, which has "
                              "enabled = false (enable it, or disable this model too)")
    return dataclasses.replace(config, models=kept)


def _split_disabled(raw: dict, source: Path | str) -> tuple[dict, set[str]]:
    """Return the raw config without the models' `enabled` keys, and the names of the disabled models."""
    tables = raw.get("models")
    if not isinstance(tables, list):
        return raw, set()
    cleaned, disabled = [], set()
    for index, table in enumerate(tables):
        if not isinstance(table, dict) or "enabled" not in table:
            cleaned.append(table)
            continue
        table = dict(table)
        enabled = table.pop("enabled")
        if not isinstance(enabled, bool):
            raise ConfigError(f"{source}: models[{index}].enabled: expected true or false, got {enabled!r}")
        if not enabled:
            disabled.add(str(table.get("name")))
        cleaned.append(table)
    return {**raw, "models": cleaned}, disabled


def apply_overrides(raw: dict, overrides: Sequence[str]) -> dict:
    """Return the raw TOML tables with each `KEY=VALUE` of `overrides` set (a copy; `raw` is left alone).

    Keys are dotted paths of tables (`folds.n_splits=3`); a model is named, not numbered
    (`models.convnext.train.epochs=3`). Values are TOML (`3`, `0.5`, `true`, `[1, 2]`, `"text"`); a value
    that is not TOML is a string (`source=local`). The result is checked by the config's schema as a file is.
    """
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, separator, text = item.partition("=")
        parts = key.strip().split(".")
        if not separator or not all(parts):
            raise ParameterError("set", item, "must be KEY=VALUE with a dotted KEY, e.g. models.NAME.train.epochs=3")
        table, parts = _override_target(raw, parts, item)
        for depth, part in enumerate(parts[:-1]):
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ParameterError("set", item, f"{'.'.join(parts[: depth + 1])} is a value, not a table")
        table[parts[-1]] = _toml_value(text.strip())
    return raw


def _override_target(raw: dict, parts: list[str], item: str) -> tuple[dict, list[str]]:
    """Return the table a dotted key starts in, and the key's remaining parts (models are found by name)."""
    if parts[0] != "models":
        return raw, parts
    tables = [table for table in raw.get("models", []) if isinstance(table, dict)]
    names = [str(table.get("name")) for table in tables]
    if len(parts) < 3:
        raise ParameterError("set", item, "a model's key is models.NAME.KEY (e.g. models.NAME.train.epochs=3)")
    for end in range(len(parts) - 1, 1, -1):  # a model's name may itself hold dots: the longest name wins
        name = ".".join(parts[1:end])
        if name in names:
            return tables[names.index(name)], parts[end:]
    raise ParameterError("set", item, f"no model named {parts[1]!r} (declared: {', '.join(names) or 'none'})")


def _toml_value(text: str) -> Any:
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def select_models(config: CompetitionConfig, names: Sequence[str]) -> CompetitionConfig:
    """Return `config` with only the named models and the members of named combinations, in config order.

    Names may be repeated or comma-separated (`--model a,b --model c`); an unknown one is refused.
    """
    wanted = model_names(names)
    if not wanted:
        return config
    chosen = set()
    for name in wanted:
        if name not in {model.name for model in config.models}:
            declared = ", ".join(m.name for m in config.models) or "none"
            raise ParameterError("model", name, f"is not a model of {config.slug} (declared: {declared})")
        chosen.add(name)
        chosen.update(getattr(config.model(name), "members", ()))
    return dataclasses.replace(config, models=tuple(model for model in config.models if model.name in chosen))


def model_names(values: Sequence[str] | None) -> list[str]:
    """Return the model names of repeated and comma-separated option values, in order, without repeats."""
    names = [name.strip() for value in values or () for name in value.split(",") if name.strip()]
    return list(dict.fromkeys(names))


def with_knn_backend(config: CompetitionConfig, backend: str | None) -> CompetitionConfig:
    """Return `config` searching with the dense kNN backend `backend` (None: the config's own choice)."""
    if backend is None:
        return config
    if backend not in KNN_BACKENDS:
        raise ParameterError("knn", backend, f"must be one of {', '.join(KNN_BACKENDS)}")
    return dataclasses.replace(config, neighbors=dataclasses.replace(config.neighbors, backend=backend))


def _check_columns(config: CompetitionConfig, source: Path | str) -> None:
    if config.task == "match" and config.submission.max_predictions > config.postprocess.max_matches:
        raise ConfigError(f"{source}: submission.max_predictions exceeds postprocess.max_matches")
    for model in config.models:
        if model.kind in COMBINED_KINDS:
            continue
        needed = {"image": "image", "text": "text", "tfidf": "text", "phash": "phash"}[model.kind]
        if getattr(config.columns, needed) is None:
            raise ConfigError(
                f"{source}: models: model {model.name!r} of kind {model.kind!r} needs columns.{needed}"
            )
