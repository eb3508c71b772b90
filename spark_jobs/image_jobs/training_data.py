"""The training job's data phases, in Spark: the run's rows, the multiclass test split, the standardisation
and PCA from aggregates, the reduced rows, and the bounded samples the driver may hold.

What reaches the driver is bounded by the number of classes and the configured sample sizes, never by
the number of photos: class counts, one cut-off key per class (``samples``), a mean and a d x d scatter
matrix (``statistics``), the model selection's stratified sample (at most ``--cv-max-rows`` rows) and the
pairwise sweep's per-class samples (at most ``--max-per-class`` rows a class).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np

from image_jobs import storage
from image_jobs.feature_identity import FeatureIdentity
from image_jobs.photo_listing import spark_timestamp
from image_jobs.samples import bounded_quotas, held_out_quota, mark_first_per_class
from image_jobs.statistics import Reduction, distributed_moments, reduce_rows
from image_jobs.training import TrainingInputError, latest_features, restrict_run

log = logging.getLogger("train_models")

# the model selection's sample: at most this many training rows (stratified); every row below it, so runs of
# today's sizes choose from all their training rows (docs/benchmarks.md measures the cost per row)
DEFAULT_CV_MAX_ROWS = 20_000


@dataclass
class TrainingData:
    """The run's rows as datasets, and what the driver knows of them (counts, the fitted reduction)."""

    rows: object  # DataFrame: path, label, label_index, test, pca (k_fit floats)[, standardised (d floats)]
    labels: list[str]
    counts: dict[str, int]
    train_counts: dict[str, int]
    reduction: Reduction
    feature_dim: int
    k: int  # the pairwise sweep's components: pca[:k]
    k_fit: int  # components fitted: the most any use
    identity: FeatureIdentity | None = None  # what made the rows' features (the model records it)

    @property
    def n_train(self) -> int:
        return sum(self.train_counts.values())

    @property
    def n_test(self) -> int:
        return sum(self.counts.values()) - self.n_train


def class_counts(features) -> dict[str, int]:
    """Rows per class, counted in Spark."""
    return {str(row["label"]): int(row["count"]) for row in features.groupBy("label").count().collect()}


def with_test_split(features, counts: dict[str, int], fraction: float, seed: int):
    """``features`` with a ``test`` column: ``fraction`` of each class (at least one, never all), seeded."""
    quotas = {label: held_out_quota(n, fraction) for label, n in counts.items()}
    return mark_first_per_class(features, quotas, seed, "multiclass test", "test")


def label_indices(df, labels: list[str]):
    """``df`` with ``label_index``: the position of its label in ``labels`` (a broadcast join)."""
    from pyspark.sql import functions as F

    index = df.sparkSession.createDataFrame(list(enumerate(labels)), "label_index int, label string")
    return df.join(F.broadcast(index), "label")


def components_to_fit(pca_components: int, reductions: list[int], feature_dim: int, n_train: int) -> tuple[int, int]:
    """(the sweep's components, the components to fit): PCA cannot exceed the dimension or the sample."""
    cap = min(feature_dim, n_train - 1)
    k = min(pca_components, cap)
    if k < pca_components:
        log.warning("PCA components reduced from %d to %d (feature dim %d, %d training images)",
                    pca_components, k, feature_dim, n_train)
    return k, max(k, min(max(reductions), cap))


def prepare(spark, features, labels: list[str], counts: dict[str, int], args) -> TrainingData:
    """Split, fit the standardisation and PCA on the training rows' aggregates, reduce every row (cached on
    the executors' disks: the later phases read it several times)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    split = label_indices(with_test_split(features, counts, args.test_fraction, args.seed), labels).persist(
        StorageLevel.DISK_ONLY)
    train_counts = {label: n for label, n in class_counts(split.filter(~F.col("test"))).items()}
    feature_dim = len(split.select("features").first()["features"])
    k, k_fit = components_to_fit(args.pca_components, args.reductions, feature_dim, sum(train_counts.values()))
    moments = distributed_moments(split.filter(~F.col("test")), "features", feature_dim)
    reduction = Reduction.fit(moments, k_fit)
    log.info("PCA: %d -> %d dimensions, %.1f%% of the variance kept (%d fitted for the model selection), "
             "from the aggregates of %d training rows", feature_dim, k,
             100 * reduction.explained_variance_ratio[:k].sum(), k_fit, moments.n)
    broadcast = spark.sparkContext.broadcast(reduction)
    rows = reduce_rows(split, broadcast, standardised=0 in args.reductions).persist(StorageLevel.DISK_ONLY)
    rows.count()  # computed once, while the split is cached
    split.unpersist()
    return TrainingData(rows, labels, counts, train_counts, reduction, feature_dim, k, k_fit)


@dataclass
class Sample:
    """Rows the driver holds: class indices and the matrices of the reductions (float32)."""

    y: np.ndarray
    pca: np.ndarray
    standardised: np.ndarray | None

    def matrices(self) -> dict[str, np.ndarray | None]:
        """The matrices ``selection.features_of`` picks a reduction's features from."""
        return {"standardised": self.standardised, "pca": self.pca}


def collect_sample(df, columns: tuple[str, ...] = ("pca", "standardised")) -> Sample:
    """The rows of ``df`` (a bounded sample) on the driver, in path order (reproducible)."""
    present = [c for c in columns if c in df.columns]
    frame = df.select("path", "label_index", *present).orderBy("path").toPandas()
    def matrix(column: str) -> np.ndarray | None:
        if column not in present or not len(frame):
            return None
        return np.stack(frame[column].to_numpy()).astype(np.float32)
    return Sample(frame["label_index"].to_numpy().astype(np.int64), matrix("pca"), matrix("standardised"))


def cv_sample(data: TrainingData, max_rows: int, folds: int, seed: int) -> Sample:
    """The model selection's stratified sample of the training rows: all of them up to ``max_rows``, else each
    class's share (at least ``folds`` rows, or all it has)."""
    from pyspark.sql import functions as F

    quotas = bounded_quotas(data.train_counts, max_rows, folds)
    chosen = mark_first_per_class(data.rows.filter(~F.col("test")), quotas, seed, "model selection", "_in")
    sample = collect_sample(chosen.filter("_in"))
    log.info("model selection on %d of %d training rows%s", len(sample.y), data.n_train,
             "" if len(sample.y) == data.n_train else f" (a stratified sample: --cv-max-rows {max_rows})")
    return sample


def sweep_sample(data: TrainingData, max_per_class: int, seed: int) -> Sample:
    """The pairwise sweep's rows: up to ``max_per_class`` of every class (train and test rows alike, as the
    study sampled each pair from all its images), the sweep's ``k`` components only."""
    quotas = {label: min(n, max_per_class) for label, n in data.counts.items()}
    chosen = mark_first_per_class(data.rows.select("path", "label", "label_index", "pca"), quotas, seed,
                                  "pairwise sweep", "_in")
    sample = collect_sample(chosen.filter("_in"), ("pca",))
    return Sample(sample.y, np.ascontiguousarray(sample.pca[:, :data.k]), None)


def read_feature_identity(spark, uri: str, backbone: str) -> FeatureIdentity:
    """The identity of the run's features, as its extraction recorded it in its summary at ``uri``."""
    if not storage.exists(spark, uri):
        raise TrainingInputError(f"--extract-summary-uri {uri} does not exist: run extract_features first")
    try:
        recorded = json.loads(storage.read_text(spark, uri)).get("feature_identity")
        identity = FeatureIdentity.from_dict(recorded, uri)
    except (ValueError, AttributeError) as exc:
        raise TrainingInputError(f"{uri} records no usable feature identity ({exc}); run extract_features "
                                 "again") from None
    if identity.backbone != backbone:
        raise TrainingInputError(f"{uri}: the extraction used backbone {identity.backbone}, not --backbone "
                                 f"{backbone}")
    return identity


def load_run_features(spark, args, labels: list[str], identity: FeatureIdentity):
    """The newest feature row per image the run sees (of ``labels``, every class when empty), of the run's
    feature ``identity``: path, label, features."""
    from pyspark.sql import functions as F

    df = storage.read_committed(spark, storage.join_uri(args.features_uri, f"backbone={args.backbone}"), log=log,
                                merge_schema=True)
    if df is None or not set(identity.columns()) <= set(df.columns):
        raise TrainingInputError(f"no features of {identity.describe()} under {args.features_uri} (rows written "
                                 "before features had an identity are not read); run extract_features first")
    for column, value in identity.columns().items():
        df = df.filter(F.col(column) == value)
    df = df.select("path", "label", "modificationTime", "run", "features")
    return latest_features(restrict_run(df, labels, spark_timestamp(args.modified_before))).select(
        "path", "label", "features")
