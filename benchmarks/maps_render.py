"""How long the app's Maps page takes to draw 50,000-point maps in a real browser (headless Chromium, WebGL).

    python -m benchmarks.maps_render [--points 50000] [--maps 3] [--rounds 3]
        [--out benchmarks/results/cpu-2core/maps-render-DATE.json]   # DATE-1map.json etc. for other --maps

Builds ``--maps`` collections of ``--points`` SYNTHETIC 16-d vectors (Gaussian class clusters, 50 images per
class) in a fresh Milvus Lite database, caches a PCA map of each (the page reads cached maps, whichever the
method), starts the app (``streamlit run``) and, ``--rounds`` times, loads the Maps page in a fresh tab and times
from the request to every map's WebGL trace holding all its points. After each round the page is screenshotted
and each map's area must hold drawn (non-white) pixels, else the round fails. Timings only: the vectors mean
nothing. ``wait_bound_s`` in the result (3x the slowest round) is the wait the browser test in
tests/test_maps.py allows the same page.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from benchmarks import REPO, benchmark_settings, cpu_result_path
from embed.common.settings import RetrievalSettings

log = logging.getLogger("benchmarks")

DATASET = "synthetic-maps"
SPLIT = "val"
MODELS = ("effnet-lite0", "effnet-lite1", "effnet-lite2")
WAIT_FACTOR = 3  # the browser test's bound over the slowest measured round (a shared, busy machine)

READY_JS = """
const plots = Array.from(document.querySelectorAll('.js-plotly-plot'));
return plots.map(g => (g._fullData && g._fullData.length && g.querySelector('canvas')) ?
                      g._fullData.reduce((s, t) => s + (t._length || 0), 0) : 0);
"""


def synthetic_database(
    base: Path,
    points: int,
    maps: int,
    dim: int = 16,
    seed: int = 0,
    settings: Optional[RetrievalSettings] = None,
) -> dict:
    """``maps`` collections (named as effnet-lite0/1/2's) of ``points`` clustered vectors, each with a cached PCA
    map under ``base/report``; returns the uri, the report dir and the collection names. ``settings``: main's, for
    the store."""
    from benchmarks.synthetic import synthetic_meta
    from embed.common.identity import EmbeddingKey
    from indexer.evaluation.maps import MapParams, compute_map
    from indexer.milvus_store import VectorStore

    rng = np.random.default_rng(seed)
    classes = max(2, points // 50)
    labels = np.arange(points) % classes
    centres = rng.normal(0, 4, (classes, dim))
    uri, report = str(base / "milvus.db"), base / "report"
    store = VectorStore(uri, settings=settings)
    names = []
    for model in MODELS[:maps]:
        x = (centres[labels] + rng.normal(0, 1, (points, dim))).astype(np.float32)
        name = EmbeddingKey(model, DATASET, SPLIT).collection_name
        meta = synthetic_meta(
            model,
            dim,
            DATASET,
            str(base / "images"),
            SPLIT,
            weights_source="synthetic",
            weights_fingerprint="synthetic",
        )
        store.ensure_collection(name, meta)
        store.upsert(
            name,
            np.arange(points),
            x,
            [f"n{c:08d}" for c in labels],
            [f"n{c:08d}/{i}.JPEG" for i, c in enumerate(labels)],
            progress=False,
        )
        store.flush(name)
        meta.rows, meta.complete = points, True
        store.set_meta(name, meta)
        compute_map(store, name, MapParams(method="pca"), report, progress=False)
        names.append(name)
    store.close()
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_all()  # the app, another process, opens the database next
    return {"uri": uri, "report": str(report), "collections": names}


def wait_drawn(driver, maps: int, points: int, timeout: float) -> float:
    """Seconds until ``maps`` plots each hold ``points`` points in a WebGL trace (polled every 20 ms), or raise."""
    t = time.perf_counter()
    while time.perf_counter() - t < timeout:
        counts = driver.execute_script(READY_JS)
        if len(counts) >= maps and all(c >= points for c in counts[:maps]):
            return time.perf_counter() - t
        time.sleep(0.02)
    raise TimeoutError(f"{maps} maps of {points:,} points not drawn within {timeout:.0f} s")


def wait_title(driver, timeout: float) -> float:
    """Seconds until the page's title is shown: the app's shell loaded and its script started, before any map."""
    t = time.perf_counter()
    while time.perf_counter() - t < timeout:
        if driver.execute_script(
            "return Array.from(document.querySelectorAll('h1')).some(h => h.textContent.startsWith('Maps:'))"
        ):
            return time.perf_counter() - t
        time.sleep(0.02)
    raise TimeoutError(f"the Maps page's title not shown within {timeout:.0f} s")


def drawn_fraction(driver, index: int) -> float:
    """Share of non-white pixels in map ``index``'s screenshot: WebGL output, read the way a user sees it."""
    from PIL import Image
    from selenium.webdriver.common.by import By

    plot = driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")[index]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", plot)
    time.sleep(0.3)
    image = np.asarray(Image.open(io.BytesIO(plot.screenshot_as_png)).convert("L"))
    return float((image < 235).mean())


@dataclass
class RenderResult:
    benchmark: str
    date: str
    machine: dict
    points: int
    maps: int
    rounds: int
    render_s: List[float]
    title_s: List[float]  # the same loads, until the page's title showed (shell and script, no map yet)
    median_s: float
    slowest_s: float
    wait_bound_s: float
    drawn_fraction: List[float]  # per map, last round: non-white share of its area
    note: str


def measure(
    points: int, maps: int, rounds: int, settings: Optional[RetrievalSettings] = None, timeout: float = 600
) -> RenderResult:
    sys.path.insert(0, str(REPO / "tests"))
    from app_browser import streamlit_in_chromium  # the tests' browser helper: the same app and browser

    with tempfile.TemporaryDirectory(prefix="maps-render-") as tmp:
        base = Path(tmp)
        db = synthetic_database(base, points, maps, settings=settings)
        args = ["--uri", db["uri"], "--report-dir", db["report"], "--split", SPLIT]
        times: List[float] = []
        titles: List[float] = []
        fractions: List[float] = []
        with streamlit_in_chromium(args, base, window="1600,1300") as (driver, url):
            driver.get(url + "/maps")  # warm-up: the app's first script run imports and connects
            wait_drawn(driver, maps, points, timeout)
            for r in range(rounds):
                driver.get("about:blank")
                t = time.perf_counter()
                driver.get(url + "/maps")
                titles.append(wait_title(driver, timeout))
                wait_drawn(driver, maps, points, timeout)
                times.append(time.perf_counter() - t)
                fractions = [drawn_fraction(driver, i) for i in range(maps)]
                if min(fractions) < 0.01:
                    raise RuntimeError(f"round {r}: a map's area is blank ({fractions})")
                log.info("round %d: %.2f s, drawn %s", r, times[-1], [round(f, 3) for f in fractions])
    return RenderResult(
        "maps_render",
        dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "browser": "headless Chromium (software WebGL)",
        },
        points,
        maps,
        rounds,
        [round(t, 3) for t in times],
        [round(t, 3) for t in titles],
        round(statistics.median(times), 3),
        round(max(times), 3),
        round(WAIT_FACTOR * max(times), 1),
        [round(f, 4) for f in fractions],
        "render_s: from the page request to every map's Scattergl trace holding all its points (warm app, fresh "
        "tab); title_s: to the page's title, before any map. Synthetic 16-d vectors, PCA maps read from the cache; "
        "Chromium draws WebGL in software here (no GPU)",
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, default=50_000, help="points per map (default %(default)s)")
    p.add_argument(
        "--maps", type=int, default=3, choices=range(1, len(MODELS) + 1), help="maps on the page (default 3)"
    )
    p.add_argument("--rounds", type=int, default=3, help="timed page loads (default %(default)s)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON result file (default benchmarks/results/cpu-2core/maps-render-DATE.json for 3 maps, "
        "maps-render-DATE-Nmap.json otherwise; the browser test reads the 3-map file)",
    )
    args = p.parse_args(argv)
    if args.out is None:
        suffix = "" if args.maps == 3 else f"-{args.maps}map"
        args.out = cpu_result_path("maps-render", suffix)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = measure(args.points, args.maps, args.rounds, benchmark_settings())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(asdict(result), indent=1) + "\n")
    print(json.dumps(asdict(result), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
