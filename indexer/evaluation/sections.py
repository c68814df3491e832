"""The report's tables, one builder per section: report.md/html and the app's Evaluation page render the same rows.

Each builder takes the typed ``ReportDocument`` and returns ``Table``s (headers and rows of text). Kept free of
NumPy, torch and the evaluation so that the page can render a report without loading them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from indexer.evaluation.document import Evaluation, Interval, ModelIntervals, ReportDocument, level_text

TOP_OVERLAP = 10  # the agreement section compares each pair's top-10 neighbour sets
INTERVAL_METRICS = ("P@1", "P@10", "R@10", "R-precision", "MAP@R", "kNN@20", "DINO kNN top-1")


@dataclass
class Table:
    headers: List[str]
    rows: List[List[str]]
    caption: str = ""

    def records(self) -> List[dict]:
        """Rows as header -> cell mappings (what st.table shows with named columns)."""
        return [dict(zip(self.headers, row)) for row in self.rows]


@dataclass
class Picture:
    file: str  # relative to the report folder
    caption: str


@dataclass
class Section:
    title: str
    tables: List[Table] = field(default_factory=list)
    sentences: List[str] = field(default_factory=list)
    note: str = ""  # shown when the section has nothing to show, or above its tables
    pictures: List[Picture] = field(default_factory=list)


def ci_text(interval: Optional[Interval]) -> str:
    """A bootstrap interval as ``mean [low, high]`` (its level is in the column header)."""
    if interval is None:
        return ""
    return f"{interval.mean:.4f} [{interval.low:.4f}, {interval.high:.4f}]"


def diff_text(interval: Interval) -> str:
    return f"[{interval.low:+.4f}, {interval.high:+.4f}]"


def results_table(evaluation: Evaluation) -> Table:
    """The CLI's table of means: every metric of every model and variant.

    Two counts, because the metrics average over different sets: images (every image in the collection, each a
    leave-one-out query of kNN@20) and queries (those with another image of their class, the only ones
    precision, recall, R-precision and MAP@R are defined for).
    """
    ks = evaluation.protocol.ks
    headers = (
        ["model", "features", "images", "queries"]
        + [f"P@{k}" for k in ks]
        + [f"R@{k}" for k in ks[:3]]
        + ["R-prec", "MAP@R", "kNN@20 (all images)", "weights", "collection index"]
    )
    rows = []
    for r in evaluation.results:
        rows.append(
            [r.model + (" ⚠random" if r.random_weights else ""), r.features, str(r.n), str(r.n_queries)]
            + [f"{r.precision[str(k)]:.4f}" for k in ks]
            + [f"{r.recall[str(k)]:.4f}" for k in ks[:3]]
            + [
                f"{r.r_precision:.4f}",
                f"{r.map_at_r:.4f}",
                f"{r.knn_top1:.4f}",
                "RANDOM" if r.random_weights else r.weights.split(":")[0],
                r.index,
            ]
        )
    return Table(headers, rows)


def intervals_section(doc: ReportDocument) -> Section:
    """Part 1. The "queries" column is the count of the ranking metrics (P@k, R@k, R-precision, MAP@R: queries with
    another image of their class); a metric averaged over other queries (kNN@20: every image; DINO kNN: the held-out
    ones) says its own count, in its header when every row shares it, else in each cell, so that every number
    sits under a count that describes it."""
    level = level_text(doc.bootstrap.level)
    metrics = [m for m in INTERVAL_METRICS if any(mi.get(m) for mi in doc.intervals)]
    queries = [_ranking_queries(mi) for mi in doc.intervals]
    headers = ["model (features)", "queries"]
    own_n_in_cells = []
    for m in metrics:
        counts = [(iv.n, q) for mi, q in zip(doc.intervals, queries) if (iv := mi.get(m)) is not None]
        distinct = {n for n, _ in counts}
        if all(n == q for n, q in counts):
            headers.append(f"{m} ({level} CI)")
            own_n_in_cells.append(False)
        elif len(distinct) == 1:
            headers.append(f"{m} ({level} CI, {distinct.pop()} queries)")
            own_n_in_cells.append(False)
        else:
            headers.append(f"{m} ({level} CI; queries in each cell)")
            own_n_in_cells.append(True)
    rows = []
    for mi, q in zip(doc.intervals, queries):
        cells = []
        for m, in_cell in zip(metrics, own_n_in_cells):
            iv = mi.get(m)
            cells.append(ci_text(iv) + (f" ({iv.n} queries)" if in_cell and iv is not None else ""))
        rows.append([f"{mi.model} ({mi.features})", "" if q is None else str(q)] + cells)
    return Section(
        f"1. Every metric with its {level} confidence interval",
        [Table(headers, rows)],
        pictures=[
            Picture(doc.figures.confidence_intervals, f"Means with {level} bootstrap intervals"),
            Picture(doc.figures.precision_at_k, "precision@k against k"),
        ],
    )


def _ranking_queries(mi: ModelIntervals) -> Optional[int]:
    """The queries the ranking metrics averaged over (all of them share P@1's)."""
    first = mi.get("P@1")
    return first.n if first else None


def pairs_section(doc: ReportDocument) -> Section:
    level = level_text(doc.bootstrap.level)
    if not doc.pairs:
        return Section("2. Paired differences", note="One model only: nothing to pair.")
    rows = [
        [
            f"{p.a} − {p.b}",
            m.metric,
            f"{m.difference.mean:+.4f}",
            diff_text(m.difference),
            "" if m.p_value is None else f"{m.p_value:.3g} (exact McNemar)",
        ]
        for p in doc.pairs
        for m in p.metrics
    ]
    return Section(
        "2. Paired differences",
        [Table(["pair", "metric", "difference", f"{level} CI (paired bootstrap)", "p"], rows)],
        sentences=doc.sentences,
    )


def per_class_section(doc: ReportDocument) -> Section:
    pc = doc.per_class
    if pc is None:
        return Section("3. Per class", note="Needs two or more models.")
    tables = []
    for movers in pc.movers:
        order = [movers.model] + [m for m in pc.models if m != movers.model]
        columns = [pc.models.index(m) for m in order]
        rows = [
            [kind, f"{c.class_name} ({c.class_id})", f"{c.gain:+.3f}"] + [f"{c.p_at_10[j]:.3f}" for j in columns]
            for kind, items in (("most ahead", movers.gains), ("least ahead", movers.losses))
            for c in items
        ]
        tables.append(
            Table(
                ["", "class", f"{movers.model} − others"] + [f"P@10 {m}" for m in order],
                rows,
                caption=f"{movers.model}: classes where its P@10 is furthest above / below the other models' mean.",
            )
        )
    pictures = (
        [Picture(doc.figures.per_class, "Per-class P@10, one point per class (dashed: equal)")]
        if doc.figures.per_class
        else []
    )
    return Section("3. Per class", tables, pictures=pictures)


def agreement_section(doc: ReportDocument) -> Section:
    if not doc.agreement:
        return Section("4. Agreement", note="Needs two or more models.")
    headers = [
        "pair",
        f"mean top-{TOP_OVERLAP} overlap",
        "P@1 both right",
        "only first",
        "only second",
        "neither",
        "queries",
    ]
    rows = [
        [f"{a.a} / {a.b}"]
        + [f"{v:.3f}" for v in (a.top_overlap, a.both_right, a.only_a, a.only_b, a.neither)]
        + [str(a.queries)]
        for a in doc.agreement
    ]
    return Section("4. Agreement", [Table(headers, rows)])


def appearance_section(doc: ReportDocument) -> Section:
    ap = doc.appearance
    title = "5. Stylistically closer, measured"
    if ap is None:
        return Section(title, note="Not measured: pass --data-root so that the images can be read.")
    level = level_text(doc.bootstrap.level)
    tables = []
    for m in ap.measures:
        rows = [["random same-class pair", ci_text(m.baseline)]] + [[mi.model, ci_text(mi.interval)] for mi in m.models]
        tables.append(Table(["", f"{m.measure} similarity to the query ({level} CI)"], rows))
    note = (
        f"{ap.queries} sampled queries; neighbours: {ap.neighbours}; baseline: {ap.baseline}. colour = CIELAB "
        "histogram intersection, structure = SSIM of 32x32 greyscale thumbnails."
    )
    return Section(title, tables, ap.sentences, note)


def dino_section(doc: ReportDocument) -> Section:
    title = "6. DINO-style kNN (weighted vote of the 20 nearest, T = 0.07, unit-normalised features)"
    if not doc.dino_knn:
        return Section(title, note="Not run: pass --holdout 0.2, or --database-split and --query-split.")
    level = level_text(doc.bootstrap.level)
    return Section(
        title,
        [
            Table(
                ["model", f"top-1 ({level} CI)", "protocol"],
                [[d.model, ci_text(d.top1), d.protocol] for d in doc.dino_knn],
            )
        ],
    )


def accuracy_section(doc: ReportDocument) -> Section:
    rows = [
        [r.model, f"{r.check.top1:.4f}", f"{r.check.top5:.4f}", str(r.check.n), r.check.weights_source]
        for r in doc.accuracy.rows
        if r.check
    ]
    tables = [Table(["model", "top-1", "top-5", "images", "weights"], rows)] if rows else []
    return Section("7. Classifier accuracy beside retrieval", tables, doc.accuracy.sentences)


def sections(doc: ReportDocument) -> List[Section]:
    """The report's table sections in order (the galleries, section 8, are pictures)."""
    return [
        intervals_section(doc),
        pairs_section(doc),
        per_class_section(doc),
        agreement_section(doc),
        appearance_section(doc),
        dino_section(doc),
        accuracy_section(doc),
    ]
