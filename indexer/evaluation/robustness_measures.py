"""The robustness evaluation's measures, one record each: what robustness.json, its tables, its plots and the app's
Evaluation page all read (names, words, units, which are per-query 0/1). Free of NumPy: the page imports it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple


@dataclass(frozen=True)
class RobustnessMeasure:
    name: str  # the key in robustness.json's records
    label: str  # short: a plot's title
    title: str  # a table's heading, the app's choice of measure
    unit: str
    definition: str  # robustness.json's protocol
    binary: bool = False  # 0 or 1 per query: paired comparisons add an exact McNemar test
    needs_labels: bool = False  # measured on labelled data only
    own_table: bool = True  # False: shown beside another measure (clean P@10 beside class P@10)


SHARE = "share of queries"

ROBUSTNESS_MEASURES: Tuple[RobustnessMeasure, ...] = (
    RobustnessMeasure(
        "copy_r1",
        "copy R@1 (original at rank 1)",
        "Copy retrieval: original at rank 1 (copy_r1)",
        SHARE,
        "share of queries whose original image is the nearest of all (rank 1)",
        binary=True,
    ),
    RobustnessMeasure(
        "copy_r10",
        "copy R@10 (original in the top 10)",
        "Copy retrieval: original in the top 10 (copy_r10)",
        SHARE,
        "share of queries whose original image is within the 10 nearest",
        binary=True,
    ),
    RobustnessMeasure(
        "copy_mrr",
        "copy MRR (1 / rank of the original)",
        "Copy retrieval: mean reciprocal rank of the original (copy_mrr)",
        "1 / rank",
        "mean of 1 / rank of the original image",
    ),
    RobustnessMeasure(
        "class_p10",
        "class P@10 (transformed query)",
        "Class retrieval: P@10 of the transformed query (class_p10), clean P@10 beside it",
        "precision",
        "P@10 of the transformed query over the 10 nearest other images (labelled data only)",
        needs_labels=True,
    ),
    RobustnessMeasure(
        "clean_p10",
        "class P@10 (clean query)",
        "Class retrieval: P@10 of the clean query (clean_p10)",
        "precision",
        "the same queries' P@10 untransformed (labelled data only)",
        needs_labels=True,
        own_table=False,
    ),
    RobustnessMeasure(
        "cosine",
        "cosine, clean vs transformed embedding",
        "Stability: cosine between the clean and the transformed embedding (cosine)",
        "cosine",
        "cosine between the clean and the transformed query's embeddings",
    ),
    RobustnessMeasure(
        "jaccard10",
        "Jaccard@10, clean vs transformed neighbours",
        "Stability: overlap of the clean and transformed neighbour lists (jaccard10)",
        "Jaccard overlap",
        "Jaccard overlap of the clean and the transformed query's neighbour lists",
    ),
    RobustnessMeasure(
        "shift_top1",
        "same nearest image, two random shifts",
        "Shift consistency: two random shifts give the same nearest other image (shift_top1)",
        SHARE,
        "translation only: two random shifts of one image give the same nearest other image",
        binary=True,
    ),
    RobustnessMeasure(
        "shift_jaccard10",
        "Jaccard@10, two random shifts",
        "Shift consistency: overlap of the two shifts' neighbour lists (shift_jaccard10)",
        "Jaccard overlap",
        "translation only: Jaccard overlap of the two shifts' neighbour lists",
    ),
)
BY_NAME: Dict[str, RobustnessMeasure] = {m.name: m for m in ROBUSTNESS_MEASURES}
MEASURES = tuple(BY_NAME)
BINARY_MEASURES = tuple(m.name for m in ROBUSTNESS_MEASURES if m.binary)
