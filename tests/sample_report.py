"""A small run report as evaluate_models writes it, for the tests of publish_report and latest.json: the
``summary.json`` and ``metrics.csv`` of two classes."""

from __future__ import annotations

SUMMARY = {"run_key": "r", "backbone": "mobilenet_v2", "classes": ["a", "b"], "image_counts": {"a": 10, "b": 12},
           "multiclass": {"accuracy": 0.8, "macro_f1": 0.79}, "rejects": {"count": 2},
           "hardest_pairs": [{"class_1": "a", "class_2": "b", "mean_pct": 81.0, "min_pct": 75.0}],
           "seconds_per_step": {"extract_features": 10.0}, "plots": ["confusion_matrix.png"]}
METRICS = ("class_1,class_2,split,iteration,num_model,predict_pct,nb_train,nb_test,nb_correct\n"
           "a,b,0.5,100,1,81.0,10,10,8\n")
