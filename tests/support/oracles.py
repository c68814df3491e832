"""Independent computations the tests compare the product with."""

import numpy as np

from embed.common.vectors import l2_normalize


def dino_by_hand(queries, q_labels, database, db_labels, k=20, t=0.07):
    """DINO's eval_knn.py on one query at a time: cosine top-k, weights exp(sim / T), summed per class."""
    q, db = l2_normalize(queries.astype(np.float64)), l2_normalize(database.astype(np.float64))
    correct = []
    for i in range(len(q)):
        sim = db @ q[i]
        top = np.argsort(-sim, kind="stable")[:k]
        scores = {}
        for j in top:
            scores[db_labels[j]] = scores.get(db_labels[j], 0.0) + np.exp(sim[j] / t)
        correct.append(max(scores, key=scores.get) == q_labels[i])
    return np.array(correct)


def pml_oracle(vectors, labels):
    """pytorch-metric-learning's AccuracyCalculator, leave-one-out (the query is in the reference set and is
    left out of its own neighbours: ref_includes_query=True), raw L2 distances (no normalisation), k = the
    largest class, as MAP@R and R-precision need. Queries alone in their class are left out, as ours are."""
    import torch
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    calc = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
        knn_func=CustomKNN(LpDistance(normalize_embeddings=False)),
        device=torch.device("cpu"),
    )
    x = torch.as_tensor(np.asarray(vectors, np.float32))
    y = torch.as_tensor(np.asarray(labels))
    return calc.get_accuracy(x, y, x, y, ref_includes_query=True)
