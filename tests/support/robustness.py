"""Robustness runs whose every query vector is chosen by hand, so that each measure's right value is known.

The evaluation's own pipeline (``measure`` then ``summarise``) runs on real images and real transformations; the
model is a lookup: it recognises each image it is given (clean, or as a condition changed it) by its pixels and
answers the vector the test chose for that query under that condition. An image it was not told about fails
loudly, so a pipeline that embeds the wrong image cannot pass unseen.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

from benchmarks.synthetic import synthetic_meta
from indexer.evaluation.query_transforms import CLEAN, Condition, transform_query
from indexer.evaluation.robustness import CollectionVectors, QueryEncoder, measure, summarise

SEED = 0


def distinct_images(n: int, size: int = 48, seed: int = 0) -> List[Image.Image]:
    """Smooth random colour images, different enough that no transformation of one equals another."""
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.uniform(0, 255, (12, 12, 3)).astype(np.uint8)).resize((size, size), Image.BICUBIC)
        for _ in range(n)
    ]


def lookup_encoder(model: str, table: Dict[bytes, np.ndarray]) -> QueryEncoder:
    """A query encoder that answers ``table[image pixels]``: the vectors the test chose."""

    def embed(images: Sequence[Image.Image]) -> np.ndarray:
        vectors = []
        for im in images:
            key = im.convert("RGB").tobytes()
            if key not in table:
                raise AssertionError(f"{model}: asked to embed an image the test made no vector for")
            vectors.append(table[key])
        return np.stack(vectors).astype(np.float32)

    # the collection's identity files the cache; the hand runs use none
    identity = synthetic_meta(model, 2, "hand", "/", "val").identity
    return QueryEncoder(model, identity, embed)  # type: ignore[arg-type]


def hand_run(
    database: Dict[str, np.ndarray],
    queries: Dict[str, Dict[Condition, np.ndarray]],
    query_rows: np.ndarray,
    labels: np.ndarray,
    resamples: int = 200,
) -> Tuple[list, list]:
    """(records, pairs) of ``summarise`` for galleries ``database[model]`` (row i: image i) whose query rows,
    under each condition (CLEAN included), embed as ``queries[model][condition]`` (one row per query)."""
    n = len(labels)
    images = distinct_images(n)
    ids = np.arange(n)
    encoders, galleries = [], []
    conditions = [c for c in next(iter(queries.values())) if c != CLEAN]
    for model, vectors in database.items():
        table: Dict[bytes, np.ndarray] = {}
        for condition, chosen in queries[model].items():
            for q, row in enumerate(query_rows):
                seen = transform_query(images[row], condition, SEED, int(ids[row])).convert("RGB").tobytes()
                vector = np.asarray(chosen[q], np.float32)
                if seen in table and not np.array_equal(table[seen], vector):
                    raise AssertionError(f"{condition} gives query {q} the pixels of another case: choose other images")
                table[seen] = vector
        encoders.append(lookup_encoder(model, table))
        galleries.append(
            CollectionVectors(
                model, ids, np.asarray(vectors, np.float32), [str(c) for c in labels], [f"{i}.png" for i in ids]
            )
        )
    outcomes = measure(
        galleries, encoders, np.asarray(query_rows), lambda r: images[r], conditions, SEED, None, progress=False
    )
    return summarise(outcomes, list(database), conditions, np.asarray(labels), np.asarray(query_rows), resamples)
