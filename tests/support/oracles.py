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
