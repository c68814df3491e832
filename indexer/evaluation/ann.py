"""``indexer ann``: what an approximate Milvus index costs each backbone, against the exact search.

For each model, the same seeded queries (rows of its collection whose class has another member) are searched
leave-one-out through FLAT and through the index at each value of its search knob, on a scratch copy of the
collection's rows on a Milvus server (the user's collections are not touched). Per operating point and model:

  recall@10   |index top 10 ∩ exact top 10| / 10, the exact top 10 from the evaluation's exact search
              (indexer.evaluation.exact.ExactSearch.leave_one_out, outside Milvus)
  P@1, P@10   under the index, beside the exact figures, with paired-bootstrap intervals of index − exact
  latency     p50 / p99 of nq = 1 searches; QPS of searches in batches of ``batch``
  build       seconds to build and load the index; memory of the loaded segments where Milvus reports it

and whether the models keep FLAT's order by P@10. Milvus Lite is refused: it searches exactly whatever the index.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from indexer.evaluation.document import CONFIDENCE, Interval, ReportSchemaError, from_plain, level_text, to_plain
from indexer.evaluation.stats import DEFAULT_RESAMPLES, bootstrap_ci, paired_difference
from indexer.index_spec import IndexSpec, SearchSweep, with_dim
from indexer.milvus_store import ANN_SCRATCH_SUFFIX, CollectionMeta, StoreError, VectorStore

log = logging.getLogger(__name__)

ANN_SCHEMA_VERSION = 1
ANN_JSON = "ann.json"
ANN_MARKDOWN = "ann.md"
ANN_PLOT = "ann_pareto.png"
RECALL_TARGET = 0.99
K = 10
LITE_REFUSAL = (
    "an ANN measurement on Milvus Lite is refused: Milvus Lite searches every vector exactly whatever the index "
    "(HNSW, IVF_FLAT and IVF_SQ8 return recall@10 = 1.000 at any parameters there; IVF_PQ is not built). Build the "
    "collections into a Milvus server (standalone: docker, or pip `milvus`; `python -m indexer serve` serves Lite "
    "and is no such server) and pass its --uri http://HOST:19530"
)


class AnnError(StoreError):
    pass


# pure logic ------------------------------------------------------------------------------------


def recall_at_k(found: Sequence[Sequence[int]], exact: np.ndarray, k: int = K) -> np.ndarray:
    """Per query, the fraction of the exact top ``k`` (row ``exact[i, :k]``) among the first ``k`` found."""
    exact = np.asarray(exact)
    if len(found) != len(exact):
        raise ValueError(f"{len(found)} result lists for {len(exact)} queries")
    return np.array([len(set(list(f)[:k]) & set(exact[i, :k].tolist())) / k for i, f in enumerate(found)], float)


def precision_at(found_labels: np.ndarray, query_labels: np.ndarray, k: int) -> np.ndarray:
    """Per query, the fraction of its first ``k`` results with its class (a short list counts its misses)."""
    return (np.asarray(found_labels)[:, :k] == np.asarray(query_labels)[:, None]).sum(1) / k


def model_order(p_at_10: Dict[str, float]) -> List[str]:
    """Models by P@10, best first; equal means in name order (the same order every time)."""
    return sorted(p_at_10, key=lambda m: (-p_at_10[m], m))


def ranking_holds(exact: Dict[str, float], indexed: Dict[str, float]) -> bool:
    """Whether the index orders the models by P@10 as FLAT does."""
    return model_order(exact) == model_order(indexed)


@dataclass
class ModelPoint:
    """One model at one operating point."""

    model: str
    recall_at_10: Interval
    p_at_1: Interval
    p_at_10: Interval
    p_at_1_change: Interval  # index − exact, paired over the same queries
    p_at_10_change: Interval
    latency_p50_ms: float
    latency_p99_ms: float
    qps: float


@dataclass
class OperatingPoint:
    """An index at one value of its search knob, every model measured."""

    index: str  # IndexSpec.label
    index_type: str
    search: Dict[str, int]
    models: List[ModelPoint]
    order: List[str]  # by P@10 under this point, best first
    ranking_holds: bool

    @property
    def key(self) -> Tuple[str, Tuple[Tuple[str, int], ...]]:
        return self.index, tuple(sorted(self.search.items()))

    @property
    def label(self) -> str:
        knob = ", ".join(f"{k}={v}" for k, v in self.search.items())
        return f"{self.index}{f' @ {knob}' if knob else ''}"

    def min_recall(self) -> float:
        return min(m.recall_at_10.mean for m in self.models)

    def max_p50_ms(self) -> float:
        return max(m.latency_p50_ms for m in self.models)


def cheapest(points: Sequence[OperatingPoint], target: float = RECALL_TARGET) -> Optional[OperatingPoint]:
    """The approximate operating point with the lowest latency (the slowest model's p50) at which every model keeps
    recall@10 >= ``target``; None when none does. FLAT is the reference, not a candidate."""
    ok = [p for p in points if p.index_type != "FLAT" and p.min_recall() >= target]
    return min(ok, key=lambda p: (p.max_p50_ms(), p.label)) if ok else None


@dataclass
class IndexBuild:
    model: str
    index: str
    seconds: float
    memory_bytes: Optional[int]  # the loaded segments, as the server reports them


@dataclass
class ExactFigures:
    model: str
    collection: str
    rows: int
    dim: int
    p_at_1: Interval
    p_at_10: Interval


@dataclass
class AnnDocument:
    dataset: str
    split: str
    target: str  # the Milvus deployment measured
    queries: int
    latency_queries: int
    batch: int
    seed: int
    resamples: int
    recall_target: float
    exact: List[ExactFigures]
    builds: List[IndexBuild]
    points: List[OperatingPoint]
    exact_order: List[str]
    sentences: List[str] = field(default_factory=list)
    schema_version: int = ANN_SCHEMA_VERSION

    @property
    def models(self) -> List[str]:
        return [e.model for e in self.exact]

    def same_protocol(self, other: "AnnDocument") -> bool:
        """Whether two runs measured the same models on the same queries (so their points can stand together)."""
        mine = (self.dataset, self.split, self.models, self.queries, self.seed, self.batch, self.latency_queries)
        return mine == (other.dataset, other.split, other.models, other.queries, other.seed, other.batch,
                        other.latency_queries)  # fmt: skip


def conclusions(doc: AnnDocument) -> List[str]:
    """The sentences the report states: per index, where the ranking holds, and the cheapest setting at the target."""
    several = len(doc.exact_order) > 1
    out = [
        f"Under FLAT (exact) the models rank by P@10: {' > '.join(doc.exact_order)}."
        if several
        else f"One model measured ({doc.exact_order[0]}): there is no order of models to keep."
    ]
    for index in dict.fromkeys(p.index for p in doc.points if p.index_type != "FLAT" and several):
        pts = [p for p in doc.points if p.index == index]
        broken = [p.label for p in pts if not p.ranking_holds]
        out.append(
            f"{index}: the order by P@10 holds at every setting measured ({len(pts)})."
            if not broken
            else f"{index}: the order by P@10 differs from FLAT's at {', '.join(broken)}."
        )
    best = cheapest(doc.points, doc.recall_target)
    if best is None:
        out.append(f"No setting measured keeps recall@10 >= {doc.recall_target} for every model.")
    else:
        out.append(
            f"Cheapest setting with recall@10 >= {doc.recall_target} for every model: {best.label} (slowest model's "
            f"p50 {best.max_p50_ms():.2f} ms, lowest recall@10 {best.min_recall():.4f}"
            + (f"; ranking {'holds' if best.ranking_holds else 'does NOT hold'})." if several else ").")
        )
    return out


# measurement -----------------------------------------------------------------------------------


@dataclass
class AnnConfig:
    index: IndexSpec
    sweep: SearchSweep
    more: Sequence[Tuple[IndexSpec, SearchSweep]] = ()  # further indexes measured on the same upload (benchmarks)
    queries: int = 1000
    latency_queries: int = 200
    batch: int = 100
    seed: int = 0
    resamples: int = DEFAULT_RESAMPLES
    recall_target: float = RECALL_TARGET
    device: str = "cpu"
    progress: bool = True
    keep_scratch: bool = False
    build_timeout_s: float = 1800  # DISKANN on a server without queryNode.enableDisk never finishes building

    @property
    def sweeps(self) -> List[Tuple[IndexSpec, SearchSweep]]:
        return [(self.index, self.sweep), *self.more]


@dataclass
class VectorSet:
    """One model's rows as the measurement needs them: ids sorted, vectors by id, class labels as integers."""

    model: str
    collection: str
    meta: CollectionMeta
    ids: np.ndarray
    vectors: np.ndarray
    labels: np.ndarray
    class_ids: List[str]
    relpaths: List[str]


def query_rows(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` rows drawn with ``seed`` among those whose class has another member (P@k needs one), sorted."""
    labels = np.asarray(labels)
    eligible = np.flatnonzero(np.bincount(labels)[labels] > 1)
    if len(eligible) == 0:
        raise AnnError("no image has another image of its class: P@k cannot be measured")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(eligible, size=min(n, len(eligible)), replace=False))


@dataclass
class _Searched:
    """One model's searches at one operating point: result rows per query, and the timings."""

    rows: List[List[int]]
    p50_ms: float
    p99_ms: float
    qps: float


def _search_point(
    store: VectorStore, name: str, vs: VectorSet, rows: np.ndarray, params: Dict[str, int], cfg: AnnConfig
) -> _Searched:
    """The queries at ``rows`` searched in batches of ``cfg.batch`` (for results and QPS), then the first
    ``latency_queries`` of them one by one (p50/p99). Bounded consistency: the rows are flushed and indexed, and
    Strong would add the server's time-tick wait (about 200 ms) to every search."""
    from tqdm import tqdm

    queries = vs.vectors[rows]
    own = vs.ids[rows]

    def run(chunk: slice) -> List[List[Dict]]:
        return store.search(
            name, queries[chunk], k=K, n_rows=len(vs.ids), exclude_self_ids=own[chunk], consistency="Bounded",
            params=params,
        )  # fmt: skip

    run(slice(0, min(len(rows), cfg.batch)))  # warm-up: the first search after a load pays for it
    found: List[List[Dict]] = []
    t = time.perf_counter()
    for start in range(0, len(rows), cfg.batch):
        found.extend(run(slice(start, start + cfg.batch)))
    qps = len(rows) / (time.perf_counter() - t)
    times = []
    for i in tqdm(range(min(cfg.latency_queries, len(rows))), desc="nq=1", disable=not cfg.progress, leave=False):
        t = time.perf_counter()
        run(slice(i, i + 1))
        times.append((time.perf_counter() - t) * 1000)
    result_rows = [np.searchsorted(vs.ids, [h["id"] for h in hits]).tolist() for hits in found]
    return _Searched(result_rows, float(np.percentile(times, 50)), float(np.percentile(times, 99)), qps)


def _labels_of(rows: List[List[int]], labels: np.ndarray, k: int) -> np.ndarray:
    """(n, k) labels of the result rows; -1 where a list is short (a miss for every query class)."""
    out = np.full((len(rows), k), -1, np.int64)
    for i, r in enumerate(rows):
        out[i, : min(k, len(r))] = labels[np.asarray(r[:k], dtype=np.int64)]
    return out


@dataclass
class _ModelRun:
    exact: ExactFigures
    builds: List[IndexBuild]
    points: Dict[Tuple[str, Tuple[Tuple[str, int], ...]], Tuple[OperatingPoint, ModelPoint]]


def measure_model(store: VectorStore, vs: VectorSet, rows: np.ndarray, cfg: AnnConfig) -> _ModelRun:
    """FLAT, then the index at every sweep value, for one model, on a scratch collection dropped afterwards."""
    from indexer.evaluation.exact import ExactSearch

    dim = vs.vectors.shape[1]
    exact = ExactSearch(vs.vectors).leave_one_out(K, rows=rows, device=cfg.device)
    q_labels = vs.labels[rows]
    exact_labels = vs.labels[exact.index]
    exact_p1, exact_p10 = precision_at(exact_labels, q_labels, 1), precision_at(exact_labels, q_labels, K)
    seed, n_res = cfg.seed, cfg.resamples
    figures = ExactFigures(
        vs.model, vs.collection, len(vs.ids), vs.vectors.shape[1],
        bootstrap_ci(exact_p1, n_res, seed), bootstrap_ci(exact_p10, n_res, seed),
    )  # fmt: skip
    scratch = f"{vs.collection}{ANN_SCRATCH_SUFFIX}"
    store.drop(scratch)  # left by a killed run
    store.ensure_collection(scratch, replace(vs.meta, index=IndexSpec()), recreate=True)
    builds: List[IndexBuild] = []
    points: Dict = {}
    try:
        store.upsert(scratch, vs.ids, vs.vectors, vs.class_ids, vs.relpaths, progress=cfg.progress)
        flat = IndexSpec()
        plan: List[Tuple[IndexSpec, Optional[int]]] = [(flat, None)] + [
            (with_dim(spec, dim), v) for spec, sweep in cfg.sweeps for v in sweep.values
        ]
        built: Optional[IndexSpec] = None
        for index, value in plan:
            if built is None or not built.same_index(index):
                seconds = store.rebuild_index(scratch, index, timeout_s=cfg.build_timeout_s)
                builds.append(IndexBuild(vs.model, index.label, round(seconds, 2), store.index_memory_bytes(scratch)))
                built = index
            params = index.search_params(value, K + 1)  # what is searched: the query's own row comes back too
            log.info("%s: %s %s", vs.model, index.label, params or "(exhaustive)")
            s = _search_point(store, scratch, vs, rows, params, cfg)
            got_labels = _labels_of(s.rows, vs.labels, K)
            p1, p10 = precision_at(got_labels, q_labels, 1), precision_at(got_labels, q_labels, K)
            recall = recall_at_k(s.rows, exact.index, K)
            mp = ModelPoint(
                vs.model,
                bootstrap_ci(recall, n_res, seed),
                bootstrap_ci(p1, n_res, seed),
                bootstrap_ci(p10, n_res, seed),
                paired_difference(p1, exact_p1, n_res, seed),
                paired_difference(p10, exact_p10, n_res, seed),
                round(s.p50_ms, 3),
                round(s.p99_ms, 3),
                round(s.qps, 1),
            )
            op = OperatingPoint(index.label, index.index_type, params, [], [], True)
            points[op.key] = (op, mp)
    finally:
        if not cfg.keep_scratch:
            store.drop(scratch)
    return _ModelRun(figures, builds, points)


def require_same_rows(sets: Sequence[VectorSet]) -> None:
    """The models are compared on the same queries: their collections must hold the same images."""
    first = sets[0]
    for vs in sets[1:]:
        if not np.array_equal(vs.ids, first.ids) or vs.relpaths != first.relpaths:
            raise AnnError(
                f"{vs.collection} and {first.collection} hold different images ({len(vs.ids)} vs {len(first.ids)} "
                f"rows): build both from the same data (same --limit) to compare them"
            )


def evaluate_ann(
    store: VectorStore, sets: Sequence[VectorSet], cfg: AnnConfig, dataset: str, split: str
) -> AnnDocument:
    """Every model at FLAT and at every sweep value of ``cfg.index``; the document the report shows."""
    if store.is_lite:
        raise AnnError(LITE_REFUSAL)
    if any(spec.exact for spec, _ in cfg.sweeps):
        raise AnnError("--index FLAT is the reference every run measures: name an approximate index to compare")
    require_same_rows(sets)
    rows = query_rows(sets[0].labels, cfg.queries, cfg.seed)
    runs = [measure_model(store, vs, rows, cfg) for vs in sets]
    exact_p10 = {r.exact.model: r.exact.p_at_10.mean for r in runs}
    points: List[OperatingPoint] = []
    for key, (op, _) in runs[0].points.items():
        members = [r.points[key][1] for r in runs]
        indexed = {m.model: m.p_at_10.mean for m in members}
        points.append(
            replace(op, models=members, order=model_order(indexed), ranking_holds=ranking_holds(exact_p10, indexed))
        )
    doc = AnnDocument(
        dataset, split, store.describe_target(), len(rows), min(cfg.latency_queries, len(rows)), cfg.batch,
        cfg.seed, cfg.resamples, cfg.recall_target, [r.exact for r in runs], [b for r in runs for b in r.builds],
        points, model_order(exact_p10),
    )  # fmt: skip
    doc.sentences = conclusions(doc)
    return doc


# documents -------------------------------------------------------------------------------------


def read_ann(folder: Path) -> Optional[AnnDocument]:
    """The ANN document ``indexer ann --report DIR`` wrote into ``folder``, if it did."""
    path = Path(folder) / ANN_JSON
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != ANN_SCHEMA_VERSION:
        raise ReportSchemaError(
            f"{path}: ANN schema version {version!r}, this version reads {ANN_SCHEMA_VERSION}: run "
            f"`python -m indexer ann ... --report {folder}` again"
        )
    return from_plain(AnnDocument, data)


def merged(new: AnnDocument, old: Optional[AnnDocument]) -> AnnDocument:
    """``new`` with the points and builds of an earlier run on the same models and queries for the indexes this
    run did not measure (one run per index type adds up to one section); FLAT's are the newest run's."""
    if old is None or not new.same_protocol(old):
        if old is not None:
            log.warning("the ANN section in the folder measured other models or queries: replaced, not merged")
        return new
    measured = {p.index for p in new.points} | {"FLAT"}
    points = sorted(
        [p for p in old.points if p.index not in measured] + new.points,
        key=lambda p: (p.index_type != "FLAT", p.index, tuple(p.search.values())),
    )  # FLAT first, then each index by its search value
    builds = [b for b in old.builds if b.index not in measured] + new.builds
    doc = replace(new, points=points, builds=builds)
    doc.sentences = conclusions(doc)
    return doc


def _ci(i: Interval, signed: bool = False) -> str:
    spec = "+.3f" if signed else ".3f"
    return f"{i.mean:{spec}} [{i.low:{spec}}, {i.high:{spec}}]"


def _mib(b: Optional[int]) -> str:
    return "n/a" if b is None else f"{b / 2**20:.1f}"


def point_table(doc: AnnDocument) -> Tuple[List[str], List[List[str]]]:
    """One row per operating point and model: the table of the report, the Markdown and the app."""
    head = ["index @ search", "model", "recall@10", "P@1 (Δ vs exact)", "P@10 (Δ vs exact)", "p50 ms", "p99 ms",
            f"QPS (batch {doc.batch})", "order holds"]  # fmt: skip
    rows = []
    for p in doc.points:
        for m in p.models:
            rows.append(
                [p.label, m.model, _ci(m.recall_at_10), f"{m.p_at_1.mean:.3f} ({_ci(m.p_at_1_change, True)})",
                 f"{m.p_at_10.mean:.3f} ({_ci(m.p_at_10_change, True)})", f"{m.latency_p50_ms:.2f}",
                 f"{m.latency_p99_ms:.2f}", f"{m.qps:.0f}",
                 ("yes" if p.ranking_holds else "NO") if len(doc.exact) > 1 else "n/a (one model)"]
            )  # fmt: skip
    return head, rows


def exact_table(doc: AnnDocument) -> Tuple[List[str], List[List[str]]]:
    head = ["model", "rows", "dim", "exact P@1", "exact P@10"]
    return head, [[e.model, str(e.rows), str(e.dim), _ci(e.p_at_1), _ci(e.p_at_10)] for e in doc.exact]


def build_table(doc: AnnDocument) -> Tuple[List[str], List[List[str]]]:
    head = ["model", "index", "build + load s", "loaded segments MiB"]
    return head, [[b.model, b.index, f"{b.seconds:.2f}", _mib(b.memory_bytes)] for b in doc.builds]


def protocol_text(doc: AnnDocument) -> str:
    return (
        f"{doc.dataset}/{doc.split} on {doc.target}: {doc.queries} seeded queries (seed {doc.seed}, each image's own "
        f"row excluded), the same for every model and index. recall@10 = overlap with the exact top 10 (computed "
        f"outside Milvus); P@k under the index with paired-bootstrap intervals of index − exact ({doc.resamples} "
        f"resamples, {level_text(CONFIDENCE)}); latency p50/p99 over {doc.latency_queries} nq=1 searches (Bounded consistency); QPS at "
        f"batch {doc.batch}; build = drop of the old index to the new one built and loaded; memory = the loaded "
        f"segments' mem_size as Milvus reports it (n/a: it reported none). Intervals in brackets."
    )


def pareto_plot(doc: AnnDocument, path: Path) -> None:
    """recall@10 against p50 latency, one line per model and index (its sweep), FLAT as a star per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from indexer.evaluation.colours import model_colours

    colours = model_colours(doc.models)
    styles = ["-", "--", ":", "-."]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    indexes = list(dict.fromkeys(p.index for p in doc.points if p.index_type != "FLAT"))
    for model in doc.models:
        for j, index in enumerate(indexes):
            pts = [(p, m) for p in doc.points if p.index == index for m in p.models if m.model == model]
            xs, ys = [m.latency_p50_ms for _, m in pts], [m.recall_at_10.mean for _, m in pts]
            ax.plot(xs, ys, styles[j % len(styles)], marker="o", ms=3, color=colours[model], label=f"{model} {index}")
            if model == doc.models[0]:
                for (p, _m), x, y in zip(pts, xs, ys):
                    ax.annotate(",".join(str(v) for v in p.search.values()), (x, y), fontsize=6, alpha=0.7)
        flat = [m for p in doc.points if p.index_type == "FLAT" for m in p.models if m.model == model]
        for m in flat:
            ax.plot([m.latency_p50_ms], [m.recall_at_10.mean], "*", ms=10, color=colours[model])
    ax.axhline(doc.recall_target, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency at nq=1 (ms, log)")
    ax.set_ylabel("recall@10 vs exact top 10")
    ax.set_title(f"{doc.dataset}/{doc.split}: recall vs latency (★ FLAT)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def add_ann_section(d, doc: AnnDocument, title: str = "Approximate index: does the ranking survive it?") -> None:
    """The ANN section into a report MarkupDocument (indexer.evaluation.report): ann.md and the report's own."""
    d.h(title)
    d.p(protocol_text(doc))
    d.paragraphs(doc.sentences)
    for table in (exact_table(doc), point_table(doc), build_table(doc)):
        d.table(*table)
    d.image(ANN_PLOT, "recall@10 vs p50 latency, one line per model and index; the grey line is the recall target")


def write_ann_report(doc: AnnDocument, folder: Path) -> AnnDocument:
    """ann.json, ann.md and ann_pareto.png in ``folder``, merged with an earlier run's other indexes."""
    from indexer.evaluation.report import MarkupDocument

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        old = read_ann(folder)
    except ReportSchemaError as e:
        log.warning("%s: replaced", e)
        old = None
    doc = merged(doc, old)
    (folder / ANN_JSON).write_text(json.dumps(to_plain(doc), indent=1))
    pareto_plot(doc, folder / ANN_PLOT)
    page = MarkupDocument(folder)
    add_ann_section(page, doc, title=f"Approximate index: {doc.dataset}/{doc.split}")
    (folder / ANN_MARKDOWN).write_text(page.markdown())
    return doc
