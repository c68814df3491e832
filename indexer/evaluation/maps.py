"""2-D maps of each model's embedding space (UMAP, PCA, t-SNE), with how far to trust them.

A map is computed from the vectors read back from Milvus, in the feature variant the comparison uses (``raw`` as
stored, or ``normalized`` to unit length, as ``indexer evaluate`` does), seeded. Beside the coordinates it carries
two figures that keep the picture from being over-read:

* trustworthiness at k = 10 (``sklearn.manifold.trustworthiness``): how many of each point's 2-D neighbours are
  neighbours in the original space (1 = every one); on a seeded subsample when the collection is large, since it
  sorts an n x n distance matrix (the sample size is recorded and shown);
* silhouette in the ORIGINAL space (``sklearn.metrics.silhouette_samples``, Euclidean, the metric the comparison
  ranks by), overall and averaged per class: a property of the model's space, not of the map, so it ties the map
  to the report's per-class P@10.

Maps are cached as ``<report dir>/maps/<collection>__<method>__<params hash>.npz`` (ids, coordinates, classes,
paths) plus a ``.json`` beside it (parameters, figures, the collection's identity), both written atomically, the
json last. A cached map is used only while its collection's identity compares interchangeable
(``VectorSetIdentity.compare``: weights, data, split, transform, precision, decode, normalisation, descriptor,
whitening) and its row count is the same; otherwise it is recomputed and replaced. A collection of another
descriptor (``indexer build --descriptor gem3``, mapped with ``indexer maps --descriptor gem3``) is another
collection, so another cache entry, and its maps' titles name the descriptor (``map_title``).

Module level imports NumPy only: the app and ``--help`` stay light; scikit-learn, umap-learn and openTSNE load
when a map is computed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from embed.common.identity import VectorSetIdentity
from embed.common.vectors import l2_normalize
from embed.extraction.shards import atomic_write_bytes
from indexer.milvus_store import CollectionMeta, StoreError, VectorStore

log = logging.getLogger(__name__)

METHODS = ("umap", "pca", "tsne")
FEATURES = ("raw", "normalized")
METHOD_TITLES = {"umap": "UMAP", "pca": "PCA", "tsne": "t-SNE"}
CACHE_FORMAT = 2
MAPS_FOLDER = "maps"


class MapError(StoreError):
    """A map cannot be made or read: the message says what to do."""


@dataclass(frozen=True)
class MapParams:
    """Everything that changes a map's coordinates or its figures; its digest names the cache file."""

    method: str = "umap"
    features: str = "raw"
    seed: int = 0
    n_neighbors: int = 15  # UMAP
    min_dist: float = 0.1  # UMAP
    perplexity: float = 30.0  # t-SNE
    trust_k: int = 10
    trust_sample: int = 5000  # trustworthiness sorts an n x n matrix: at most this many points
    silhouette_sample: int = 10000  # silhouette is O(n^2 d): at most this many points

    def __post_init__(self):
        if self.method not in METHODS:
            raise MapError(f"unknown map method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.features not in FEATURES:
            raise MapError(f"unknown feature variant {self.features!r}: choose raw or normalized")

    def method_params(self) -> Dict:
        """The parameters of this method only (what the map's caption states)."""
        if self.method == "umap":
            return {"n_neighbors": self.n_neighbors, "min_dist": self.min_dist, "metric": "euclidean"}
        if self.method == "tsne":
            return {"perplexity": self.perplexity, "metric": "euclidean"}
        return {"n_components": 2}

    def key(self) -> Dict:
        """What the cache is keyed on: the method's parameters, the variant, the seed and the figures' settings."""
        return {
            "method": self.method,
            "features": self.features,
            "seed": self.seed,
            **self.method_params(),
            "trust_k": self.trust_k,
            "trust_sample": self.trust_sample,
            "silhouette_sample": self.silhouette_sample,
        }

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.key(), sort_keys=True).encode()).hexdigest()[:12]

    def label(self) -> str:
        """e.g. 'UMAP (n_neighbors 15, min_dist 0.1, seed 0) · raw features'."""
        shown = ", ".join(f"{k} {v}" for k, v in self.method_params().items() if k != "metric")
        return f"{METHOD_TITLES[self.method]} ({shown}, seed {self.seed}) · {self.features} features"


@dataclass
class ClassSeparation:
    class_id: str
    silhouette: float  # mean silhouette of the class's points, original space
    n: int  # its points in the silhouette sample


@dataclass
class MapQuality:
    trustworthiness: float
    trust_k: int  # effective k (smaller than asked for very small collections)
    trust_points: int  # points it was computed on (a seeded subsample when the collection is larger)
    silhouette: float  # overall, original space
    silhouette_points: int
    per_class: List[ClassSeparation] = field(default_factory=list)

    def caption(self, n: int) -> str:
        """e.g. 'trustworthiness@10 0.912 (5,000-point sample) · silhouette +0.041 in the original space'."""

        def sample(points: int) -> str:
            return f" ({points:,}-point sample)" if points < n else ""

        return (
            f"trustworthiness@{self.trust_k} {self.trustworthiness:.3f}{sample(self.trust_points)} · "
            f"silhouette {self.silhouette:+.3f} in the original space{sample(self.silhouette_points)}"
        )


@dataclass
class MapResult:
    """One collection's map: coordinates in id order, what made them, and how far to trust them."""

    collection: str
    model: str
    identity: VectorSetIdentity  # of the collection it was computed from
    rows: int  # the collection's rows when it was computed (a build with a larger --limit adds rows)
    params: MapParams
    effective: Dict  # parameters as run (clamped for small collections)
    ids: np.ndarray  # int64, sorted
    coords: np.ndarray  # float32 (n, 2)
    class_ids: List[str]
    relpaths: List[str]
    quality: MapQuality
    seconds: float  # to compute (embedding + figures), when it was computed
    cached: bool = False

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def descriptor(self) -> str:
        """The collection's descriptor when it is not the model's own pooling as stored (e.g. gem3, gem3-white512),
        else ""; titles name it (``map_title``)."""
        from indexer.catalog import non_default_descriptor

        return non_default_descriptor(self.identity)

    def line(self) -> str:
        """The CLI's one line per map."""
        q = self.quality

        def points(used: int) -> str:
            return f"all {used:,}" if used >= self.n else f"sample {used:,}"

        # a PCA of a few hundred rows takes milliseconds: "0.0 s" would read as "nothing was computed"
        ms = self.seconds * 1000
        took = f"{self.seconds:.1f} s" if ms >= 999.5 else f"{ms:.0f} ms" if ms >= 1 else f"{ms:.2f} ms"

        return (
            f"{map_title(self.model, self.descriptor):14} {self.params.method:5} {self.params.features:10} n={self.n:<7} "
            f"trustworthiness@{q.trust_k}={q.trustworthiness:.3f} ({points(q.trust_points)}) "
            f"silhouette={q.silhouette:+.3f} ({points(q.silhouette_points)})  "
            + (f"cached (computed in {took})" if self.cached else f"computed in {took}")
        )

    def is_current(self, meta: CollectionMeta) -> bool:
        """Whether this map was computed from the collection as ``meta`` describes it now."""
        return self.identity.compare(meta.identity).interchangeable and self.rows == int(meta.rows)


def map_title(model: str, descriptor: str) -> str:
    """A map's title: the model (its name or title), and the descriptor when it is not the model's own pooling
    (``MapResult.descriptor``; a page showing several descriptors of one model names each one)."""
    return f"{model} · {descriptor}" if descriptor else model


def cache_paths(report_dir: Path, collection: str, params: MapParams) -> Tuple[Path, Path]:
    """(arrays, json) of this collection's map with these parameters."""
    stem = f"{collection}__{params.method}__{params.digest()}"
    folder = Path(report_dir) / MAPS_FOLDER
    return folder / f"{stem}.npz", folder / f"{stem}.json"


# reading the cache -----------------------------------------------------------------------------


def _params_from(data: Dict) -> MapParams:
    return MapParams(**{k: v for k, v in data.items() if k in MapParams.__dataclass_fields__})


def _read(json_path: Path, load_arrays: bool = True) -> Optional[MapResult]:
    """A cached map, or None when it is absent, unreadable, of another format or its arrays do not match."""
    try:
        doc = json.loads(json_path.read_text())
        if doc.get("format") != CACHE_FORMAT:
            return None
        params = _params_from(doc["params"])
        q = doc["quality"]
        quality = MapQuality(
            q["trustworthiness"],
            q["trust_k"],
            q["trust_points"],
            q["silhouette"],
            q["silhouette_points"],
            [ClassSeparation(**c) for c in q["per_class"]],
        )
        empty = np.zeros(0)
        ids, coords, classes, paths = empty.astype(np.int64), empty.reshape(0, 2).astype(np.float32), [], []
        if load_arrays:
            raw = json_path.with_suffix(".npz").read_bytes()
            if hashlib.sha256(raw).hexdigest() != doc["npz_sha256"]:
                return None  # the json belongs to another write of the arrays
            with np.load(io.BytesIO(raw), allow_pickle=False) as z:
                ids, coords = z["ids"], z["coords"]
                classes, paths = z["class_ids"].tolist(), z["relpaths"].tolist()
        return MapResult(
            doc["collection"],
            doc["model"],
            VectorSetIdentity.from_dict(doc["identity"]),
            doc["rows"],
            params,
            doc["effective"],
            ids,
            coords,
            classes,
            paths,
            quality,
            doc["seconds"],
            cached=True,
        )
    except (OSError, ValueError, KeyError, TypeError, MapError) as e:
        log.debug("unusable map cache %s: %s", json_path, e)
        return None


def load_map(report_dir: Path, collection: str, meta: CollectionMeta, params: MapParams) -> Optional[MapResult]:
    """The cached map of this collection as it is now, or None (missing, or made from an earlier build)."""
    _, json_path = cache_paths(report_dir, collection, params)
    if not json_path.is_file():
        return None
    found = _read(json_path, load_arrays=False)
    if found is None or not found.is_current(meta):
        return None
    return _read(json_path)


def available_params(report_dir: Path, collections: Dict[str, CollectionMeta]) -> List[MapParams]:
    """The parameter sets with a current map for at least one of ``collections`` (name -> meta), UMAP first."""
    folder = Path(report_dir) / MAPS_FOLDER
    found = []
    for json_path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        m = _read(json_path, load_arrays=False)
        if m is None or m.collection not in collections or not m.is_current(collections[m.collection]):
            continue
        if m.params not in found:
            found.append(m.params)
    return sorted(found, key=lambda p: (METHODS.index(p.method), FEATURES.index(p.features), p.digest()))


# computing -------------------------------------------------------------------------------------


def embed_2d(x: np.ndarray, params: MapParams, n_jobs: int = -1) -> Tuple[np.ndarray, Dict]:
    """(coordinates float32 (n, 2), effective parameters) of ``x`` by ``params.method``, seeded."""
    n = len(x)
    if n < 3:
        raise MapError(f"a map needs at least 3 points, the collection has {n}")
    if params.method == "pca":
        from sklearn.decomposition import PCA

        coords = PCA(n_components=2, random_state=params.seed).fit_transform(x)
        return coords.astype(np.float32), {"n_components": 2}
    if params.method == "umap":
        import warnings

        import umap

        log.info(
            "UMAP of %d x %d (seeded: one thread; the first UMAP in a process also compiles its numba code, "
            "a minute or two)",
            n,
            x.shape[1],
        )
        n_neighbors = min(params.n_neighbors, n - 1)
        with warnings.catch_warnings():  # "n_jobs overridden by setting random_state": seeded UMAP is one thread
            warnings.filterwarnings("ignore", message=".*n_jobs.*", category=UserWarning)
            reducer = umap.UMAP(
                n_components=2,
                n_neighbors=n_neighbors,
                min_dist=params.min_dist,
                metric="euclidean",
                random_state=params.seed,
                init="spectral" if n > n_neighbors + 2 else "random",
            )
            coords = reducer.fit_transform(x)
        return np.asarray(coords, np.float32), {
            "n_neighbors": n_neighbors,
            "min_dist": params.min_dist,
            "metric": "euclidean",
            "threads": 1,
        }
    from openTSNE import TSNE

    perplexity = min(params.perplexity, max(1.0, (n - 1) / 3))
    jobs = os.cpu_count() if n_jobs == -1 else n_jobs
    emb = TSNE(
        n_components=2, perplexity=perplexity, metric="euclidean", random_state=params.seed, n_jobs=jobs, verbose=False
    ).fit(x)
    return np.asarray(emb, np.float32), {"perplexity": perplexity, "metric": "euclidean", "threads": jobs}


def _sample(n: int, size: int, seed: int) -> np.ndarray:
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def map_quality(x: np.ndarray, coords: np.ndarray, class_ids: Sequence[str], params: MapParams) -> MapQuality:
    """Trustworthiness of ``coords`` for ``x`` and the per-class silhouette of ``x`` (see the module docstring)."""
    from sklearn.manifold import trustworthiness
    from sklearn.metrics import silhouette_samples

    n = len(x)
    t_idx = _sample(n, params.trust_sample, params.seed)
    k = max(1, min(params.trust_k, len(t_idx) // 2 - 1))
    trust = float(trustworthiness(x[t_idx], coords[t_idx], n_neighbors=k))
    s_idx = _sample(n, params.silhouette_sample, params.seed + 1)
    labels = np.asarray(class_ids, dtype=object)[s_idx]
    classes, codes = np.unique(labels.astype(str), return_inverse=True)
    per_class: List[ClassSeparation] = []
    overall = float("nan")
    if 2 <= len(classes) < len(s_idx):
        values = silhouette_samples(x[s_idx], codes, metric="euclidean")
        overall = float(values.mean())
        for c, name in enumerate(classes):
            members = values[codes == c]
            per_class.append(ClassSeparation(str(name), float(members.mean()), int(len(members))))
    return MapQuality(trust, k, int(len(t_idx)), overall, int(len(s_idx)), per_class)


def _features(vectors: np.ndarray, variant: str) -> np.ndarray:
    return l2_normalize(vectors) if variant == "normalized" else np.asarray(vectors, np.float32)


def compute_map(
    store: VectorStore,
    collection: str,
    params: MapParams,
    report_dir: Path,
    force: bool = False,
    progress: bool = True,
    embedder: Callable = embed_2d,
) -> MapResult:
    """The map of one collection: from the cache when it is current (and not ``force``), else computed and cached."""
    from tqdm import tqdm

    meta = store.meta(collection)
    if meta is None:
        raise MapError(f"{collection} is not a collection made by this tool: build it with python -m indexer build")
    if not force:
        cached = load_map(report_dir, collection, meta, params)
        if cached is not None:
            return cached
    if not meta.complete:
        log.warning(
            "%s is incomplete (an interrupted build): its map covers the rows there now; rerun "
            "python -m indexer build to finish it",
            collection,
        )
    t = time.perf_counter()
    with tqdm(
        total=4, desc=f"map {meta.model} ({params.method})", unit="step", disable=not progress, dynamic_ncols=True
    ) as bar:
        bar.set_postfix_str("reading vectors from Milvus")
        ids, vectors, class_ids, relpaths = store.read_all(collection)
        bar.update()
        x = _features(vectors, params.features)
        bar.set_postfix_str(f"{METHOD_TITLES[params.method]} of {len(x):,} x {x.shape[1] if x.ndim == 2 else 0}")
        coords, effective = embedder(x, params)
        bar.update()
        bar.set_postfix_str("trustworthiness and silhouette")
        quality = map_quality(x, coords, class_ids, params)
        bar.update()
        result = MapResult(
            collection,
            meta.model,
            meta.identity,
            int(meta.rows),
            params,
            effective,
            ids,
            coords,
            list(class_ids),
            list(relpaths),
            quality,
            round(time.perf_counter() - t, 3),
        )
        bar.set_postfix_str("writing the cache")
        save_map(report_dir, result)
        bar.update()
    return result


def save_map(report_dir: Path, result: MapResult) -> None:
    """Arrays first, then the json naming their digest: a reader never pairs a json with other arrays."""
    npz_path, json_path = cache_paths(report_dir, result.collection, result.params)
    buf = io.BytesIO()
    np.savez(
        buf,
        ids=np.asarray(result.ids, np.int64),
        coords=np.asarray(result.coords, np.float32),
        class_ids=np.asarray(result.class_ids, dtype=str),
        relpaths=np.asarray(result.relpaths, dtype=str),
    )
    raw = buf.getvalue()
    atomic_write_bytes(npz_path, raw)
    doc = {
        "format": CACHE_FORMAT,
        "collection": result.collection,
        "model": result.model,
        "identity": result.identity.to_dict(),
        "rows": result.rows,
        "params": asdict(result.params),
        "effective": result.effective,
        "n": result.n,
        "quality": asdict(result.quality),
        "seconds": result.seconds,
        "npz_sha256": hashlib.sha256(raw).hexdigest(),
    }
    atomic_write_bytes(json_path, json.dumps(doc, indent=1, sort_keys=True).encode())


def maps_command(
    split: str,
    models: Sequence[str],
    report_dir: str,
    uri: str,
    method: str = "umap",
    features: str = "raw",
    descriptor: str = "",
) -> str:
    """The command that makes the maps the app's pages look for (the pages show it when maps are missing);
    ``descriptor``: the collections' descriptor (``--descriptor``), "" for each model's own pooling."""
    parts = ["python -m indexer maps", f"--split {split}"]
    if models:
        parts.append(f"--models {','.join(models)}")
    if descriptor:
        parts.append(f"--descriptor {descriptor}")
    parts += [f"--method {method}", f"--features {features}", f"--report-dir {report_dir}", f"--uri {uri}"]
    return " ".join(parts)
