"""The training job's distributed statistics and samples against numpy and scikit-learn on small data: the
moments, the standardisation and PCA from them, the reduced rows, the per-class choices of rows, and the
final multiclass fit with Spark ML against scikit-learn's on the same rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from image_jobs.samples import bounded_quotas, held_out_quota, mark_first_per_class
from image_jobs.statistics import Moments, Reduction, distributed_moments, reduce_rows

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def rows():
    """300 rows of 24 correlated features with an offset mean far from 0 and one constant feature."""
    rng = np.random.default_rng(5)
    x = (rng.normal(40, 3, (300, 24)) @ rng.normal(0, 1, (24, 24))).astype(np.float32)
    x[:, 7] = 2.5
    return x


def frame(spark, x: np.ndarray, partitions: int):
    return spark.createDataFrame(pd.DataFrame({"features": list(x)}), "features array<float>").repartition(partitions)


def test_moments_of_partitions_combine_to_the_moments_of_all_rows(spark, rows):
    x = rows.astype(np.float64)
    whole = Moments.of(x)
    parts = Moments.of(x[:10]).combine(Moments.of(x[10:11])).combine(Moments.of(x[11:]))
    np.testing.assert_allclose(parts.mean, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(parts.scatter, whole.scatter, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(whole.scatter / (len(x) - 1), np.cov(x, rowvar=False), rtol=1e-9, atol=1e-9)
    for partitions in (1, 7):
        got = distributed_moments(frame(spark, rows, partitions), "features", rows.shape[1])
        assert got.n == len(rows)
        np.testing.assert_allclose(got.mean, whole.mean, rtol=1e-12)
        np.testing.assert_allclose(got.scatter, whole.scatter, rtol=1e-9, atol=1e-6)


def test_the_reduction_is_scikit_learns_standard_scaler_and_pca(spark, rows):
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    reduction = Reduction.fit(distributed_moments(frame(spark, rows, 4), "features", rows.shape[1]), 10)
    scaler = StandardScaler().fit(rows)
    pca = PCA(n_components=10, svd_solver="covariance_eigh").fit(scaler.transform(rows))
    np.testing.assert_allclose(reduction.mean, scaler.mean_, rtol=1e-6)
    np.testing.assert_allclose(reduction.scale, scaler.scale_, rtol=1e-6)
    assert reduction.constant.tolist() == [i == 7 for i in range(24)]
    np.testing.assert_allclose(reduction.components, pca.components_, atol=1e-6)  # signs as scikit-learn's
    np.testing.assert_allclose(reduction.explained_variance_ratio, pca.explained_variance_ratio_, rtol=1e-5)
    np.testing.assert_allclose(reduction.reduce(rows), pca.transform(scaler.transform(rows)), atol=1e-4)
    indexed = spark.createDataFrame(pd.DataFrame({"i": range(len(rows)), "features": list(rows)}),
                                    "i long, features array<float>").repartition(3)
    reduced = {r.i: r for r in reduce_rows(indexed, spark.sparkContext.broadcast(reduction), standardised=True)
               .collect()}
    assert sorted(reduced) == list(range(len(rows)))  # every row once, its other columns passed through
    got_pca = np.stack([reduced[i].pca for i in range(len(rows))])
    got_z = np.stack([reduced[i].standardised for i in range(len(rows))])
    np.testing.assert_allclose(got_z, scaler.transform(rows), atol=1e-4)
    np.testing.assert_allclose(got_pca, pca.transform(scaler.transform(rows)), atol=1e-4)


def test_per_class_choices_are_exact_reproducible_and_independent_of_partitioning(spark):
    labels = ["a"] * 50 + ["b"] * 7 + ["c"] * 1
    df = spark.createDataFrame(pd.DataFrame({"path": [f"file:/i/{label}/{i}.jpg" for i, label in enumerate(labels)],
                                             "label": labels}))
    quotas = {label: held_out_quota(n, 0.2) for label, n in {"a": 50, "b": 7, "c": 1}.items()}
    assert quotas == {"a": 10, "b": 1, "c": 0}  # at least one, never the class's only image
    chosen = mark_first_per_class(df.repartition(5), quotas, 3, "multiclass test", "test")
    picked = {r.path for r in chosen.filter("test").collect()}
    assert sorted(pd.Series([p.split("/")[2] for p in picked]).value_counts().items()) == [("a", 10), ("b", 1)]
    again = mark_first_per_class(df.repartition(2), quotas, 3, "multiclass test", "test")
    assert {r.path for r in again.filter("test").collect()} == picked
    other_seed = mark_first_per_class(df, quotas, 4, "multiclass test", "test")
    assert {r.path for r in other_seed.filter("test").collect()} != picked
    assert chosen.count() == len(labels)  # every row kept, flagged
    assert bounded_quotas({"a": 50, "b": 7}, 100, 5) == {"a": 50, "b": 7}  # under the cap: every row
    assert bounded_quotas({"a": 900, "b": 90, "c": 10}, 100, 5) == {"a": 90, "b": 9, "c": 5}


def test_spark_mls_fit_is_scikit_learns_for_the_same_c(spark):
    """regParam = 1 / (C n) with standardised inputs: the final model answers as scikit-learn's fit of C."""
    from image_jobs.model_selection import Setting, fit_logistic
    from image_jobs.multiclass import fit_final

    rng = np.random.default_rng(2)
    centres = rng.normal(0, 1, (4, 16))
    y = rng.integers(0, 4, 400)
    x = (centres[y] + rng.normal(0, 2, (400, 16))).astype(np.float32)
    rows = spark.createDataFrame(pd.DataFrame({"pca": list(x), "label_index": y.astype(np.int32), "test": False}))
    for c in (0.01, 1.0):
        final = fit_final(rows, Setting(0, 16, c), 400, 4)
        reference = fit_logistic(x, y, c, seed=0)
        logits = x @ final.coef.T + final.intercept
        proba = np.exp(logits - logits.max(axis=1, keepdims=True))
        proba /= proba.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(proba, reference.predict_proba(x), atol=5e-3)
        assert (proba.argmax(axis=1) == reference.predict(x)).mean() >= 0.995
