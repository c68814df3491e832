"""``python -m indexer robustness``: retrieval under the queries users really send.

A seeded, class-stratified sample of the split's images is changed by each transformation family at each
severity (``query_transforms.py``), embedded by each model exactly as its collection was built (weights,
preprocessing, precision, decode mode, normalisation: the collection's metadata), and searched against that
model's clean collection. Per model, family and severity, on the same queries:

* copy retrieval (no labels needed): the rank of the original image among all the collection's images for the
  transformed query: copy_r1 (rank 1), copy_r10 (rank <= 10), copy_mrr (mean of 1 / rank);
* class retrieval: class_p10, the share of the query's class among the 10 nearest *other* images, beside
  clean_p10, the same for the untransformed query (paired: the same queries);
* stability: cosine between the clean and the transformed query's embeddings; jaccard10, the overlap of their
  10-nearest-other-images lists;
* shift consistency (translation only, after Zhang 2019): two independent random shifts of the same image:
  shift_top1, how often their nearest other image is the same; shift_jaccard10, the overlap of their lists.

Neighbour lists leave the original out everywhere (its place is what copy retrieval measures). Search is exact
(``exact.ExactSearch``): float64 distances from the query vectors to every vector read once from Milvus (NumPy;
faster than one Milvus search per condition, and it gives the original's rank beyond any top k).

Transformed-query embeddings are cached under the collection's identity (``QueryCache``): a rerun embeds only
conditions or queries it has not seen.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from embed.common.identity import VectorSetIdentity
from embed.common.settings import DEFAULTS, RetrievalSettings
from embed.extraction.shards import atomic_write_bytes
from indexer.evaluation.document import CONFIDENCE, ROBUSTNESS_SCHEMA_VERSION, level_text, to_plain
from indexer.evaluation.exact import ExactSearch
from indexer.evaluation.query_transforms import (
    CLEAN,
    DEFAULT_FAMILIES,
    FAMILIES,
    SHIFT_FAMILY,
    TRANSFORMS_VERSION,
    Condition,
    conditions_for,
    parse_families,
    transform_query,
)
from indexer.evaluation.robustness_measures import BINARY_MEASURES, BY_NAME, MEASURES, ROBUSTNESS_MEASURES
from indexer.evaluation.stats import (
    DEFAULT_RESAMPLES,
    Interval,
    McNemar,
    column_intervals,
    mcnemar_difference,
    mcnemar_exact,
    paired_difference,
)
from indexer.milvus_store import CollectionMeta, StoreError

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

TOP_K = 10


def protocol(confidence: float = CONFIDENCE) -> Dict:
    """The protocol robustness.json states, its intervals and significance rule at ``confidence``."""
    level = level_text(confidence)
    return {
        "name": "robustness of retrieval to transformed queries",
        "queries": "seeded class-stratified sample of the split (class counts differ by at most one)",
        "embedding": "Each transformed query is embedded like the collection's rows (weights, preprocessing, "
        "precision, decode mode, normalisation) and searched against the model's clean collection",
        "search": "exact: float64 squared L2 from each query to every vector read from Milvus",
        "neighbour_lists": "the 10 nearest images other than the original",
        **{m.name: m.definition for m in ROBUSTNESS_MEASURES},
        "units": {m.name: m.unit for m in ROBUSTNESS_MEASURES},
        "statistics": f"{level} percentile bootstrap over queries; differences between models on the same queries: "
        f"exact McNemar intervals for {', '.join(BINARY_MEASURES[:-1])} and {BINARY_MEASURES[-1]}, paired bootstrap "
        f"for the others",
        "significance": f"one rule per measure: a difference on a binary measure ({', '.join(BINARY_MEASURES)}) is "
        f"significant when the exact McNemar test on the discordant queries gives p < {1 - confidence:.3g}, and its "
        f"{level} interval is the one that test inverts (Clopper-Pearson), so it excludes zero exactly then; on the "
        f"other measures, when the paired-bootstrap {level} interval of the difference excludes zero",
        "sentences": "one per family at its strongest severity measured: the models with the highest and lowest "
        "copy_r1",
    }


class RobustnessError(StoreError):
    """A robustness evaluation that cannot run as asked; the message says what to do."""


# inputs --------------------------------------------------------------------------------------------


@dataclass
class CollectionVectors:
    """One model's clean collection, read once: ids sorted, row i holds ids[i]."""

    model: str
    ids: np.ndarray
    vectors: np.ndarray
    class_ids: List[str]
    relpaths: List[str]


# what a transformed query's embedding depends on beside its collection's identity
QUERY_CACHE_VERSION = f"robustness-queries-{TRANSFORMS_VERSION}"


@dataclass
class QueryEncoder:
    """Images -> query vectors for one model, and the identity its cached vectors are filed under."""

    model: str
    identity: VectorSetIdentity  # the collection's: the query vectors are made as its rows were
    embed: Callable[[List], np.ndarray]
    batch_size: int = 32


class QueryCache:
    """Transformed-query embeddings of one collection identity: one .npz per condition and seed.

    ``<root>/<digest>/identity.json`` says what the digest stands for; each file holds ``ids`` and ``vectors``
    and grows when a later run asks for more queries. Files are written atomically (tmp + rename)."""

    def __init__(self, root: Path, identity: VectorSetIdentity):
        self.identity = identity
        self.folder = Path(root) / identity.digest(QUERY_CACHE_VERSION)

    def _path(self, condition: Condition, seed: int) -> Path:
        return self.folder / f"{condition.key}-s{seed}.npz"

    def load(self, condition: Condition, seed: int) -> Tuple[np.ndarray, np.ndarray]:
        path = self._path(condition, seed)
        if not path.is_file():
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        try:
            with np.load(path) as z:
                return z["ids"].astype(np.int64), z["vectors"].astype(np.float32)
        except (OSError, ValueError, KeyError):
            log.warning("ignoring unreadable cache file %s (it is rewritten)", path)
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)

    def save(self, condition: Condition, seed: int, ids: np.ndarray, vectors: np.ndarray) -> None:
        if not (self.folder / "identity.json").is_file():
            said = {"identity": self.identity.to_dict(), "version": QUERY_CACHE_VERSION}
            atomic_write_bytes(self.folder / "identity.json", json.dumps(said, indent=1).encode())
        buf = io.BytesIO()
        order = np.argsort(ids, kind="stable")
        np.savez(buf, ids=np.asarray(ids, np.int64)[order], vectors=np.asarray(vectors, np.float32)[order])
        atomic_write_bytes(self._path(condition, seed), buf.getvalue())


def stratified_sample(class_ids: Sequence[str], n: int, seed: int, labelled: bool = True) -> np.ndarray:
    """Sorted row indices: ``n`` rows drawn class by class in a seeded round robin, so that class counts differ
    by at most one (a plain seeded sample when ``labelled`` is False)."""
    rng = np.random.default_rng(seed)
    total = len(class_ids)
    if n >= total:
        return np.arange(total)
    if not labelled:
        return np.sort(rng.choice(total, size=n, replace=False))
    labels = np.asarray(class_ids, dtype=object)
    members = [rng.permutation(np.flatnonzero(labels == c)) for c in sorted(set(class_ids))]
    order = rng.permutation(len(members))
    chosen: List[int] = []
    depth = 0
    while len(chosen) < n:
        for c in order:
            if depth < len(members[c]):
                chosen.append(int(members[c][depth]))
                if len(chosen) == n:
                    break
        depth += 1
    return np.sort(np.asarray(chosen, dtype=np.int64))


# per-query outcomes --------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One model's answers to one condition's queries, in sample order."""

    rank: np.ndarray  # (n,) rank of the original among all rows
    top: np.ndarray  # (n, 10) rows of the 10 nearest other images
    cosine: np.ndarray  # (n,) with the clean query's embedding


@dataclass
class Timing:
    read_collections_s: float = 0.0
    load_images_s: float = 0.0
    transform_s: float = 0.0
    embed_s: float = 0.0
    search_s: float = 0.0
    statistics_s: float = 0.0
    embedded: Dict[str, int] = field(default_factory=dict)  # model -> queries embedded now (not from the cache)
    embed_s_by_model: Dict[str, float] = field(default_factory=dict)  # model loading included
    from_cache: Dict[str, int] = field(default_factory=dict)


def _jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inter = (a[:, :, None] == b[:, None, :]).any(-1).sum(1)
    return inter / (a.shape[1] + b.shape[1] - inter)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-300)


def measure(
    galleries: Sequence[CollectionVectors],
    encoders: Sequence[QueryEncoder],
    query_rows: np.ndarray,
    load_image: Callable[[int], Image.Image],
    conditions: Sequence[Condition],
    seed: int,
    cache_roots: Optional[Dict[str, Path]] = None,
    progress: bool = True,
    timing: Optional[Timing] = None,
) -> Dict[Tuple[str, Condition], Outcome]:
    """Every model's outcome for the clean queries and each condition.

    ``query_rows`` index the galleries (aligned: the same ids in every gallery); ``load_image(row)`` gives the
    original image; ``cache_roots[model]`` is where that model's transformed-query vectors are cached (None:
    no cache). Transformed images are made once per condition and shared by the models."""
    from tqdm import tqdm

    timing = timing or Timing()
    ids = galleries[0].ids[query_rows]
    caches = {
        e.model: QueryCache(cache_roots[e.model], e.identity) if cache_roots and e.model in cache_roots else None
        for e in encoders
    }
    everything = [CLEAN] + [c for c in conditions if c != CLEAN]
    cached: Dict[Tuple[str, Condition], Tuple[np.ndarray, Optional[np.ndarray]]] = {}
    missing_total = {e.model: 0 for e in encoders}
    for e in encoders:
        cache = caches[e.model]
        for c in everything:
            got = cache.load(c, seed) if cache else (np.zeros(0, np.int64), None)
            cached[(e.model, c)] = got
            missing_total[e.model] += int((~np.isin(ids, got[0])).sum())
    originals: Dict[int, Image.Image] = {}
    bars = {
        e.model: tqdm(
            total=missing_total[e.model],
            unit="query",
            desc=f"{e.model} transformed queries",
            disable=not progress or not missing_total[e.model],
            dynamic_ncols=True,
        )
        for e in encoders
    }
    by_model = {g.model: g for g in galleries}
    clean_vectors: Dict[str, np.ndarray] = {}
    out: Dict[Tuple[str, Condition], Outcome] = {}
    try:
        for c in everything:
            need = {e.model: ~np.isin(ids, cached[(e.model, c)][0]) for e in encoders}
            wanted = np.flatnonzero(np.any(np.stack(list(need.values())), 0))
            images: Dict[int, Image.Image] = {}
            if len(wanted):
                t = time.perf_counter()
                for j in wanted:
                    if int(j) not in originals:
                        originals[int(j)] = load_image(int(query_rows[j]))
                timing.load_images_s += time.perf_counter() - t
                t = time.perf_counter()
                images = {int(j): transform_query(originals[int(j)], c, seed, int(ids[j])) for j in wanted}
                timing.transform_s += time.perf_counter() - t
            for e in encoders:
                have_ids, have_vecs = cached[(e.model, c)]
                todo = np.flatnonzero(need[e.model])
                if len(todo):
                    t = time.perf_counter()
                    parts = []
                    for s in range(0, len(todo), e.batch_size):
                        batch = todo[s : s + e.batch_size]
                        parts.append(np.asarray(e.embed([images[int(j)] for j in batch]), np.float32))
                        bars[e.model].update(len(batch))
                    new = np.concatenate(parts)
                    timing.embed_s += time.perf_counter() - t
                    timing.embed_s_by_model[e.model] = (
                        timing.embed_s_by_model.get(e.model, 0.0) + time.perf_counter() - t
                    )
                    have_ids = np.concatenate([have_ids, ids[todo]])
                    have_vecs = new if have_vecs is None or have_vecs.size == 0 else np.concatenate([have_vecs, new])
                    cache = caches[e.model]
                    if cache:
                        cache.save(c, seed, have_ids, have_vecs)
                timing.embedded[e.model] = timing.embedded.get(e.model, 0) + len(todo)
                timing.from_cache[e.model] = timing.from_cache.get(e.model, 0) + len(ids) - len(todo)
                lookup = {int(i): r for r, i in enumerate(have_ids)}
                assert have_vecs is not None  # every id was cached or has just been embedded
                vectors = have_vecs[[lookup[int(i)] for i in ids]]
                cached[(e.model, c)] = (np.zeros(0, np.int64), None)  # memory: only the outcome is kept
                t = time.perf_counter()
                rank, top, _ = ExactSearch(by_model[e.model].vectors).ranked_search(vectors, TOP_K, query_rows)
                if c == CLEAN:
                    clean_vectors[e.model] = vectors
                out[(e.model, c)] = Outcome(rank, top, _cosine(clean_vectors[e.model], vectors))
                timing.search_s += time.perf_counter() - t
    finally:
        for bar in bars.values():
            bar.close()
    return out


# statistics ------------------------------------------------------------------------------------------


@dataclass
class RobustnessRecord:
    """One model under one family at one severity: each measure's mean with its bootstrap interval."""

    model: str
    family: str
    level: int
    param: str
    value: float
    queries: int
    copy_r1: Interval
    copy_r10: Interval
    copy_mrr: Interval
    cosine: Interval
    jaccard10: Interval
    class_p10: Optional[Interval] = None
    clean_p10: Optional[Interval] = None
    class_p10_change: Optional[Interval] = None  # class_p10 - clean_p10, paired over the same queries
    shift_top1: Optional[Interval] = None
    shift_jaccard10: Optional[Interval] = None

    def measures(self) -> Dict[str, Interval]:
        return {m: getattr(self, m) for m in MEASURES if getattr(self, m) is not None}

    def to_json(self) -> Dict:
        out: Dict[str, Any] = {
            "model": self.model,
            "family": self.family,
            "severity": self.level,
            self.param: self.value,
            "param": self.param,
            "queries": self.queries,
        }
        out.update({m: v.mean for m, v in self.measures().items()})
        out["ci"] = {m: [v.low, v.high] for m, v in self.measures().items()}
        if self.class_p10_change is not None:
            out["class_p10_change"] = self.class_p10_change.mean
            out["ci"]["class_p10_change"] = [self.class_p10_change.low, self.class_p10_change.high]
        return out


@dataclass
class RobustnessPair:
    """Model a minus model b on one measure, one family, one severity, over the same queries."""

    a: str
    b: str
    family: str
    level: int
    param: str
    value: float
    measure: str
    a_mean: float
    b_mean: float
    difference: Interval
    mcnemar: Optional[McNemar] = None

    @property
    def significant(self) -> bool:
        """protocol()["significance"]: McNemar's p on a binary measure, else the paired-bootstrap interval (on a binary
        measure ``difference`` is McNemar's own interval, so the two agree)."""
        if self.mcnemar is not None:
            return self.mcnemar.p_value < 1 - self.difference.level
        return self.difference.excludes_zero()

    def to_json(self) -> Dict:
        out = {
            "a": self.a,
            "b": self.b,
            "family": self.family,
            "severity": self.level,
            self.param: self.value,
            "measure": self.measure,
            "a_mean": self.a_mean,
            "b_mean": self.b_mean,
            "difference": self.difference.mean,
            "ci": [self.difference.low, self.difference.high],
            "significant": self.significant,
        }
        if self.mcnemar is not None:
            out["mcnemar"] = asdict(self.mcnemar)
        return out


@dataclass
class QueryMeasures:
    """Per-query values of every measure of one model, family and severity (None: not measured)."""

    values: Dict[str, np.ndarray]

    def get(self, measure: str) -> Optional[np.ndarray]:
        return self.values.get(measure)


def query_measures(
    outcomes: Dict[Tuple[str, Condition], Outcome],
    model: str,
    condition: Condition,
    labels: Optional[np.ndarray],
    query_rows: np.ndarray,
) -> QueryMeasures:
    o = outcomes[(model, condition)]
    clean = outcomes[(model, CLEAN)]
    v = {
        "copy_r1": (o.rank == 1).astype(float),
        "copy_r10": (o.rank <= 10).astype(float),
        "copy_mrr": 1.0 / o.rank,
        "cosine": o.cosine,
        "jaccard10": _jaccard(clean.top, o.top),
    }
    if labels is not None:
        own = labels[query_rows][:, None]
        v["class_p10"] = (labels[o.top[:, :TOP_K]] == own).mean(1)
        v["clean_p10"] = (labels[clean.top[:, :TOP_K]] == own).mean(1)
    second = outcomes.get((model, Condition(condition.family, condition.level, condition.param, condition.value, 1)))
    if second is not None and condition.draw == 0:
        v["shift_top1"] = (o.top[:, 0] == second.top[:, 0]).astype(float)
        v["shift_jaccard10"] = _jaccard(o.top, second.top)
    return QueryMeasures(v)


def _intervals(values: Dict[str, np.ndarray], resamples: int, seed: int, confidence: float) -> Dict[str, Interval]:
    """Every measure's interval from one shared set of resamples of the queries."""
    names = list(values)
    intervals = column_intervals(np.stack([values[n] for n in names], 1), resamples, seed, confidence)
    return dict(zip(names, intervals))


def summarise(
    outcomes: Dict[Tuple[str, Condition], Outcome],
    models: Sequence[str],
    conditions: Sequence[Condition],
    labels: Optional[np.ndarray],
    query_rows: np.ndarray,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> Tuple[List[RobustnessRecord], List[RobustnessPair]]:
    records, pairs = [], []
    for c in (c for c in conditions if c.draw == 0):
        per_model = {m: query_measures(outcomes, m, c, labels, query_rows) for m in models}
        for m in models:
            qm = per_model[m]
            iv = _intervals(qm.values, resamples, seed, confidence)
            change = (
                paired_difference(qm.values["class_p10"], qm.values["clean_p10"], resamples, seed, confidence)
                if "class_p10" in qm.values
                else None
            )
            records.append(
                RobustnessRecord(m, c.family, c.level, c.param, c.value, len(query_rows), class_p10_change=change, **iv)
            )
        for a, b in itertools.combinations(models, 2):
            for name in MEASURES:
                va, vb = per_model[a].get(name), per_model[b].get(name)
                if va is None or vb is None or name == "clean_p10":
                    continue
                test = mcnemar_exact(va > 0.5, vb > 0.5) if name in BINARY_MEASURES else None
                difference = (
                    paired_difference(va, vb, resamples, seed, confidence)
                    if test is None
                    else mcnemar_difference(test, confidence)
                )
                pairs.append(
                    RobustnessPair(
                        a,
                        b,
                        c.family,
                        c.level,
                        c.param,
                        c.value,
                        name,
                        float(va.mean()),
                        float(vb.mean()),
                        difference,
                        test,
                    )
                )
    return records, pairs


def _strongest(records: Sequence[RobustnessRecord], family: str) -> int:
    return max(r.level for r in records if r.family == family)


def family_sentences(records: Sequence[RobustnessRecord], pairs: Sequence[RobustnessPair]) -> List[str]:
    """One plain sentence per family at its strongest severity measured, on keeping the original at rank 1:
    the models with the highest and the lowest copy_r1, their difference with its interval and McNemar p; for
    translation also one on shift consistency."""
    out = []
    for family in dict.fromkeys(r.family for r in records):
        level = _strongest(records, family)
        here = [r for r in records if r.family == family and r.level == level]
        lead = FAMILIES[family].describe(here[0].value)
        out.append(
            _sentence(
                lead[0].upper() + lead[1:],
                here,
                pairs,
                "copy_r1",
                ("keeps the original at rank 1", "keep the original at rank 1"),
            )
        )
        if family == SHIFT_FAMILY and here[0].shift_top1 is not None:
            out.append(
                _sentence(
                    f"For two random shifts of the same image (up to {here[0].value:g} px)",
                    here,
                    pairs,
                    "shift_top1",
                    ("returns the same nearest other image", "return the same nearest other image"),
                )
            )
    return out


def _sentence(
    lead: str, here: Sequence[RobustnessRecord], pairs: Sequence[RobustnessPair], measure: str, what: Tuple[str, str]
) -> str:
    """``what``: the verb phrase for one model and for several."""
    ranked = sorted(here, key=lambda r: (-getattr(r, measure).mean, r.model))
    if len(ranked) == 1:
        v = getattr(ranked[0], measure)
        return f"{lead}, {ranked[0].model} {what[0]} for {v.mean:.3f} of the queries ({v.words()})."
    hi, lo = ranked[0], ranked[-1]
    p = next(
        p
        for p in pairs
        if p.family == hi.family and p.level == hi.level and p.measure == measure and {p.a, p.b} == {hi.model, lo.model}
    )
    sign = 1 if p.a == hi.model else -1
    d = p.difference
    pv = f", exact McNemar p = {p.mcnemar.p_value:.2g}" if p.mcnemar is not None else ""
    others = "; ".join(f"{r.model}: {getattr(r, measure).mean:.3f}" for r in ranked[1:-1])
    rest = f"; {others}" if others else ""
    a, b = getattr(hi, measure).mean, getattr(lo, measure).mean
    stats = f"difference {sign * d.mean:+.3f} ({d.words(signed=True, negate=sign < 0)}{pv})"
    if not p.significant:
        return (
            f"{lead}, {hi.model} and {lo.model} {what[1]} about as often (no significant difference): "
            f"{a:.3f} vs {b:.3f}, {stats}{rest}."
        )
    return f"{lead}, {hi.model} {what[0]} more often than {lo.model}: {a:.3f} vs {b:.3f}, {stats}{rest}."


# the whole evaluation over indexed collections ------------------------------------------------------


@dataclass
class RobustnessConfig:
    split: str
    models: List[str]
    dataset: Optional[str] = None  # when the split is indexed for several datasets
    data_root: Optional[Path] = None  # where the query images are read; default: the collection's
    embeddings: Path = Path(DEFAULTS.embeddings)  # root of the cache
    queries: int = 500
    families: Sequence[str] = DEFAULT_FAMILIES
    severities: int = 3
    seed: int = 0
    resamples: int = DEFAULT_RESAMPLES
    confidence: float = CONFIDENCE  # of every interval (stats.column_intervals, stats.paired_difference)
    batch_size: int = 32
    device: str = "auto"
    labels: bool = True  # False: label-free measures only, whatever the collection holds
    progress: bool = True


@dataclass
class RobustnessResult:
    models: List[str]
    dataset: str
    split: str
    labelled: bool
    query_ids: List[int]
    conditions: List[Condition]
    records: List[RobustnessRecord]
    pairs: List[RobustnessPair]
    sentences: List[str]
    timing: Timing
    seed: int = 0
    resamples: int = DEFAULT_RESAMPLES
    wall_s: float = 0.0
    confidence: float = CONFIDENCE  # of every interval in records and pairs

    def to_json(self) -> Dict:
        families = {c.family: FAMILIES[c.family] for c in self.conditions}
        return {
            "schema_version": ROBUSTNESS_SCHEMA_VERSION,
            "protocol": protocol(self.confidence),
            "dataset": self.dataset,
            "split": self.split,
            "models": self.models,
            "labelled": self.labelled,
            "queries": len(self.query_ids),
            "query_ids": self.query_ids,
            "seed": self.seed,
            "resamples": self.resamples,
            "confidence": self.confidence,
            "families": [
                {
                    "name": f.name,
                    "param": f.param,
                    "source": f.source,
                    "levels": [c.value for c in self.conditions if c.family == f.name and c.draw == 0],
                }
                for f in families.values()
            ],
            "records": [r.to_json() for r in self.records],
            "pairs": [p.to_json() for p in self.pairs],
            "sentences": self.sentences,
            "timing": asdict(self.timing),
            "wall_s": self.wall_s,
        }


def cache_root(embeddings: Path, model: str, dataset: str, split: str) -> Path:
    """``<embeddings>/<model key>/<dataset>/<split>/robustness``: beside the model's embeddings of the split."""
    from embed.common.identity import EmbeddingKey

    return EmbeddingKey(model, dataset, split).folder(Path(embeddings)) / "robustness"


def collection_encoder(
    meta: CollectionMeta, device: str, batch_size: int, settings: Optional[RetrievalSettings] = None
) -> QueryEncoder:
    """The query path of one collection: its QueryEmbedder (loaded on first use, so a run the cache answers loads
    no model), filed under the collection's identity (weights, transform, decode, precision, normalisation);
    ``settings``: where its weights are cached (the store's)."""
    from indexer.query_embedding import QueryEmbedder

    state: Dict[str, QueryEmbedder] = {}

    def embed(images: List) -> np.ndarray:
        if "query" not in state:
            state["query"] = QueryEmbedder.for_collection(meta, device=device, settings=settings)
        return state["query"].embed(list(images))

    return QueryEncoder(meta.model, meta.identity, embed, batch_size)


def read_gallery(store, coll, progress: bool) -> CollectionVectors:
    ids, vectors, class_ids, relpaths = store.read_all(coll.name, progress=progress)
    return CollectionVectors(coll.meta.model, ids, vectors, class_ids, relpaths)


def is_labelled(class_ids: Sequence[str]) -> bool:
    return len(set(class_ids)) >= 2 and all(class_ids)


def evaluate_collections(store, cfg: RobustnessConfig) -> RobustnessResult:
    """Read each model's collection once, transform, embed (or take from the cache), search, summarise."""
    from embed.sources.imaging import load_rgb
    from indexer.catalog import find_collection, one_dataset
    from indexer.evaluation.metrics import encode_labels

    start = time.perf_counter()
    families = parse_families(",".join(cfg.families))
    conditions = conditions_for(families, cfg.severities)
    colls = one_dataset([find_collection(store, m, cfg.split, cfg.dataset) for m in cfg.models], cfg.split)
    randoms = [c.meta.model for c in colls if c.meta.is_random]
    if randoms:
        log.warning("%s use RANDOM weights: their figures measure nothing but chance", ", ".join(randoms))
    timing = Timing()
    t = time.perf_counter()
    galleries = [read_gallery(store, c, cfg.progress) for c in colls]
    timing.read_collections_s = time.perf_counter() - t
    galleries = _aligned(galleries)
    first = galleries[0]
    labelled = cfg.labels and is_labelled(first.class_ids)
    if cfg.labels and not labelled:
        log.info("the collection has fewer than two classes (or unlabelled images): label-free measures only")
    rows = stratified_sample(first.class_ids, cfg.queries, cfg.seed, labelled)
    meta = colls[0].meta
    root = Path(cfg.data_root).expanduser().resolve() if cfg.data_root else Path(meta.data_root)
    folder = root / cfg.split
    if not folder.is_dir():
        raise RobustnessError(
            f"cannot read the query images: {folder} is not a folder; pass --data-root DIR (the "
            f"folder holding the split {cfg.split!r} the collections were built from)"
        )
    encoders = [collection_encoder(c.meta, cfg.device, cfg.batch_size, store.settings) for c in colls]
    roots = {c.meta.model: cache_root(cfg.embeddings, c.meta.model, c.meta.dataset, c.meta.split) for c in colls}
    outcomes = measure(
        galleries,
        encoders,
        rows,
        lambda r: load_rgb(folder / first.relpaths[r]),
        conditions,
        cfg.seed,
        roots,
        cfg.progress,
        timing,
    )
    t = time.perf_counter()
    labels = encode_labels(first.class_ids) if labelled else None
    models = [g.model for g in galleries]
    records, pairs = summarise(outcomes, models, conditions, labels, rows, cfg.resamples, cfg.seed, cfg.confidence)
    sentences = family_sentences(records, pairs)
    timing.statistics_s = time.perf_counter() - t
    return RobustnessResult(
        models,
        meta.dataset,
        cfg.split,
        labelled,
        [int(i) for i in first.ids[rows]],
        conditions,
        records,
        pairs,
        sentences,
        timing,
        cfg.seed,
        cfg.resamples,
        time.perf_counter() - start,
        cfg.confidence,
    )


def _aligned(galleries: Sequence[CollectionVectors]) -> List[CollectionVectors]:
    """The galleries restricted to the ids all of them hold (paired comparisons need the same queries)."""
    common = galleries[0].ids
    for g in galleries[1:]:
        common = np.intersect1d(common, g.ids)
    out = []
    for g in galleries:
        if len(common) != len(g.ids):
            log.warning(
                "%s: %d of its %d rows are not in every collection compared; they are left out",
                g.model,
                len(g.ids) - len(common),
                len(g.ids),
            )
        keep = np.searchsorted(g.ids, common)
        out.append(
            CollectionVectors(
                g.model, g.ids[keep], g.vectors[keep], [g.class_ids[i] for i in keep], [g.relpaths[i] for i in keep]
            )
        )
    if any(o.relpaths != out[0].relpaths for o in out[1:]):
        raise RobustnessError(
            "the collections list different images under the same ids: rebuild them from the same --data-root"
        )
    if len(common) < 2:
        raise RobustnessError("the collections share fewer than two images: nothing to search")
    return out


# outputs -------------------------------------------------------------------------------------------


def plot_measures(doc: Dict, folder: Path) -> List[str]:
    """One PNG per measure: a panel per family, the measure against the severity's parameter, a line per model
    with its interval (class P@10 also shows each model's clean P@10, dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = doc["records"]
    families = list(dict.fromkeys(r["family"] for r in records))
    models = doc["models"]
    from indexer.evaluation.colours import model_colours

    colours = model_colours(models)
    names = []
    for measure in MEASURES:
        if measure == "clean_p10":
            continue
        fams = [f for f in families if any(measure in r for r in records if r["family"] == f)]
        if not fams:
            continue
        cols = min(4, len(fams))
        rows_n = (len(fams) + cols - 1) // cols
        fig, axes = plt.subplots(rows_n, cols, figsize=(3.4 * cols, 2.7 * rows_n), dpi=90, squeeze=False)
        for ax, fam in zip(axes.flat, fams):
            for m in models:
                rs = sorted((r for r in records if r["family"] == fam and r["model"] == m), key=lambda r: r["severity"])
                x = [r[r["param"]] for r in rs]
                y = np.array([r[measure] for r in rs])
                err = np.array([[r[measure] - r["ci"][measure][0], r["ci"][measure][1] - r[measure]] for r in rs]).T
                ax.errorbar(x, y, yerr=err, marker="o", ms=3, capsize=2, color=colours[m], label=m)
                if measure == "class_p10":
                    ax.plot(x, [r["clean_p10"] for r in rs], ls="--", lw=1, color=colours[m])
            param = next(r["param"] for r in records if r["family"] == fam)
            # ticks at the severities measured, and only there: a lone severity would get made-up neighbours
            ax.set_xticks(sorted({r[param] for r in records if r["family"] == fam}))
            if measure != "cosine":  # shares and overlaps: the whole 0-1 range, so panels compare at a glance
                ax.set_ylim(-0.03, 1.03)
            ax.set_title(fam, fontsize=9)
            ax.set_xlabel(param, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(True, alpha=0.3)
        for ax in list(axes.flat)[len(fams) :]:
            ax.set_visible(False)
        axes.flat[0].legend(fontsize=7)
        fig.suptitle(BY_NAME[measure].label + (" (dashed: clean P@10)" if measure == "class_p10" else ""), fontsize=10)
        fig.tight_layout()
        name = f"robustness_{measure}.png"
        fig.savefig(Path(folder) / name)
        plt.close(fig)
        names.append(name)
    return names


def output_files(doc: Dict, folder: Optional[Path], json_path: Optional[Path] = None) -> List[Path]:
    """Every file ``write_outputs`` wrote for ``doc``, in the order written (the command's last line names them)."""
    files: List[Path] = []
    if folder is not None:
        folder = Path(folder)
        files += [folder / name for name in doc.get("figures", [])]
        files += [folder / "robustness.json", folder / "robustness.md"]
        if (folder / "report.json").is_file():  # it was there: rewritten with the section
            files += [folder / name for name in ("report.json", "report.md", "report.html")]
    if json_path is not None:
        files.append(Path(json_path))
    return files


def write_outputs(result: RobustnessResult, folder: Optional[Path], json_path: Optional[Path] = None) -> Dict:
    """robustness.json, robustness.md and the plots into ``folder``; the JSON also to ``json_path``. When the
    folder holds the comparison report, report.json takes the same document and report.md/html gain the section."""
    # NaN as null, as report.json writes it: the two copies of this document stay equal
    doc = to_plain(result.to_json())
    if folder is not None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        doc["figures"] = plot_measures(doc, folder)
        (folder / "robustness.json").write_text(json.dumps(doc, indent=1))
        from indexer.evaluation.report import MarkupDocument
        from indexer.evaluation.robustness_tables import add_robustness_section

        page = MarkupDocument(folder)
        add_robustness_section(page, doc, level=1)
        (folder / "robustness.md").write_text(page.markdown())
        report = folder / "report.json"
        if report.is_file():
            from indexer.evaluation.document import ReportDocument
            from indexer.evaluation.report import write_report_files

            rdoc = ReportDocument.from_json(report.read_text())
            rdoc.robustness = doc
            write_report_files(rdoc, folder)
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(doc, indent=1))
    return doc
