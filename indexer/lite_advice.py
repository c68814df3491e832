"""When a collection outgrows Milvus Lite: the measured size, and the one line `indexer build` prints past it."""

from __future__ import annotations

from typing import Optional

# Milvus Lite 3 computes a FLAT L2 search in NumPy over every stored vector, so one query's time grows with
# rows x dim. On a quiet 2-core run (benchmarks/results/cpu-2core/2026-11-24.json, "milvus") the nq=1 p50 at
# 2048 dims was 32 ms at 10,000 rows and 145.9 ms at 50,000: it passes 100 ms, a third of the app's 300 ms budget
# for three columns, at about 34,000 rows. `python -m benchmarks.run --only scale`
# (benchmarks/results/cpu-2core/2026-11-25-scale.json, "search_curve") measured the embedded Milvus server at
# 35 ms for the same search at 50,000 x 2048, and Lite past 100 ms from 10,000 rows on the busy machine.
LITE_SLOW_ROWS_X_DIM = 34_000 * 2048
LITE_SLOW_MS = 100
MEASURED = "145.9 ms per query at 50,000 x 2048 on Milvus Lite vs 35 ms on a Milvus server, 2 CPU cores"
THRESHOLD_ENV = "RETRIEVAL_LITE_SLOW_ROWS_X_DIM"  # overrides the threshold (tests, other machines)


def server_advice(
    is_lite: bool, collection: str, rows: int, dim: int, threshold_rows_x_dim: Optional[int] = None
) -> Optional[str]:
    """The recommendation to move ``collection`` to a Milvus server, or None while Lite is fast enough;
    ``threshold_rows_x_dim``: RETRIEVAL_LITE_SLOW_ROWS_X_DIM when set, else the measured ``LITE_SLOW_ROWS_X_DIM``."""
    threshold = threshold_rows_x_dim or LITE_SLOW_ROWS_X_DIM
    if not is_lite or rows * dim < threshold:
        return None
    return (
        f"{collection}: {rows:,} rows x {dim} dims is past the size where Milvus Lite's FLAT search takes over "
        f"{LITE_SLOW_MS} ms per query (from about {threshold // dim:,} rows at {dim} dims; measured {MEASURED}): "
        f"for the app, build into a Milvus server with --uri http://HOST:19530"
    )
