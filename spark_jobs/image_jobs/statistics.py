"""The standardisation and the PCA of the training job from distributed aggregates: the driver holds a mean,
a d x d scatter matrix and the components, never the rows.

One pass over the training rows: every Arrow batch gives its count, mean and centred scatter
(``(x - mean)^T (x - mean)``, float64, one BLAS product), partitions combine them with Chan et al.'s
pairwise update (exact, and stable where raw sums of squares would cancel), and Spark's ``treeReduce``
brings a few partial results to the driver. From those moments come exactly what scikit-learn's
``StandardScaler`` and ``PCA(svd_solver="covariance_eigh")`` compute from the same rows: the population
standard deviation (a constant feature keeps scale 1 and becomes 0), the covariance of the standardised
rows and its eigen-decomposition, components signed as scikit-learn signs them (``svd_flip``: each
component's largest entry positive). The reduced rows are then computed in the tasks (``reduce_rows``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Moments:
    """Count, mean and centred scatter matrix of a set of rows (float64)."""

    n: int
    mean: np.ndarray  # (d,)
    scatter: np.ndarray  # (d, d): sum over rows of (x - mean)(x - mean)^T

    @classmethod
    def of(cls, x: np.ndarray) -> Moments:
        """The moments of the rows of ``x`` (n, d)."""
        x = np.asarray(x, dtype=np.float64)
        mean = x.mean(axis=0)
        centred = x - mean
        return cls(len(x), mean, centred.T @ centred)

    def combine(self, other: Moments) -> Moments:
        """The moments of both sets of rows (Chan, Golub and LeVeque's pairwise update)."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        scatter = self.scatter + other.scatter + np.outer(delta, delta) * (self.n * other.n / n)
        return Moments(n, mean, scatter)


def _partition_moments(column: str, dim: int):
    """The ``mapInPandas`` function giving each partition's moments of the array column ``column`` as one row."""

    def moments(batches: Iterator) -> Iterator:
        import pandas as pd

        total = Moments(0, np.zeros(dim), np.zeros((dim, dim)))
        for pdf in batches:
            if len(pdf):
                total = total.combine(Moments.of(np.stack(pdf[column].to_numpy())))
        yield pd.DataFrame({"n": [total.n], "mean": [total.mean.tobytes()], "scatter": [total.scatter.tobytes()]})

    return moments


def distributed_moments(df, column: str, dim: int) -> Moments:
    """The moments of the ``dim``-long array column ``column`` of ``df``, computed by the tasks; the driver
    receives at most about four partial results (``treeReduce`` deep enough for the partitions), each a
    d-vector and a d x d matrix (13 MB for 1,280-d features)."""
    from pyspark.sql.types import BinaryType, LongType, StructField, StructType

    schema = StructType([StructField("n", LongType()), StructField("mean", BinaryType()),
                         StructField("scatter", BinaryType())])
    partials = df.select(column).mapInPandas(_partition_moments(column, dim), schema).rdd.map(
        lambda row: Moments(int(row.n), np.frombuffer(row.mean), np.frombuffer(row.scatter).reshape(dim, dim)))
    depth = max(2, math.ceil(math.log(max(partials.getNumPartitions(), 2), 4)))
    return partials.treeReduce(Moments.combine, depth=depth)


@dataclass(frozen=True)
class Reduction:
    """A fitted standardisation + PCA, as scikit-learn's ``StandardScaler`` and ``PCA`` would hold them."""

    mean: np.ndarray  # (d,) the training rows' mean
    scale: np.ndarray  # (d,) their population standard deviation; 1 for a constant feature
    constant: np.ndarray  # (d,) bool: features with zero variance (standardised to 0)
    components: np.ndarray  # (k, d) principal axes of the standardised rows, largest variance first
    explained_variance: np.ndarray  # (k,)
    explained_variance_ratio: np.ndarray  # (k,)
    n: int

    @classmethod
    def fit(cls, moments: Moments, k: int) -> Reduction:
        """Standardisation and a ``k``-component PCA from the training rows' moments."""
        variance = np.diag(moments.scatter) / moments.n
        constant = variance == 0
        scale = np.where(constant, 1.0, np.sqrt(variance))
        covariance = moments.scatter / np.outer(scale, scale) / max(1, moments.n - 1)
        covariance[constant, :] = 0.0
        covariance[:, constant] = 0.0
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        eigenvalues, eigenvectors = np.clip(eigenvalues[::-1], 0.0, None), eigenvectors[:, ::-1]
        components = eigenvectors.T[:k]
        signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
        components = components * np.where(signs == 0, 1.0, signs)[:, None]
        total = eigenvalues.sum()
        ratio = eigenvalues / total if total > 0 else np.zeros_like(eigenvalues)
        return cls(moments.mean, scale, constant, components, eigenvalues[:k], ratio[:k], moments.n)

    def standardise(self, x: np.ndarray) -> np.ndarray:
        """``(x - mean) / scale``, 0 for a constant feature (as ``StandardScaler.transform``)."""
        return np.where(self.constant, 0.0, (np.asarray(x, dtype=np.float64) - self.mean) / self.scale)

    def reduce(self, x: np.ndarray, k: int | None = None) -> np.ndarray:
        """The first ``k`` (default: all fitted) principal components of rows ``x``, float32."""
        components = self.components if k is None else self.components[:k]
        return (self.standardise(x) @ components.T).astype(np.float32)


def reduce_rows(df, reduction_broadcast, column: str = "features", standardised: bool = False):
    """``df`` with ``pca`` (every fitted component) and, with ``standardised``, ``standardised`` (the d
    standardised features) array columns instead of ``column``, computed in the tasks. The reduction
    travels as a broadcast (``Reduction``); the other columns pass through."""
    from pyspark.sql.types import ArrayType, FloatType, StructField, StructType

    kept = [field for field in df.schema.fields if field.name != column]
    extra = [StructField("pca", ArrayType(FloatType(), False))]
    if standardised:
        extra.append(StructField("standardised", ArrayType(FloatType(), False)))

    def transform(batches: Iterator) -> Iterator:
        reduction = reduction_broadcast.value
        for pdf in batches:
            x = np.stack(pdf[column].to_numpy()) if len(pdf) else np.zeros((0, len(reduction.mean)))
            out = pdf.drop(columns=[column])
            out["pca"] = list(reduction.reduce(x))
            if standardised:
                out["standardised"] = list(reduction.standardise(x).astype(np.float32))
            yield out

    return df.mapInPandas(transform, StructType([*kept, *extra]))
