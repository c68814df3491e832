"""``evaluate --report DIR``: which backbone retrieves better, how sure we are, and in pictures.

Writes DIR/report.json (every figure), DIR/report.md (tables, sentences, links to the PNGs beside it)
and DIR/report.html (the same, self-contained: PNGs embedded as base64, no external assets).
All figures come from the per-query values of one evaluation pass (``evaluate_runs``).
"""

from __future__ import annotations

import base64
import html
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from embed.common.settings import DEFAULTS
from indexer.evaluation.document import (
    Accuracy,
    AccuracyCheck,
    AccuracyRow,
    Agreement,
    Appearance,
    AppearanceMeasure,
    Bootstrap,
    ClassFigure,
    ClassMovers,
    DinoRow,
    Evaluation,
    Figures,
    Gallery,
    GalleryColumn,
    Interval,
    MetricInterval,
    ModelInterval,
    ModelIntervals,
    PairComparison,
    PairedMetric,
    PairInterval,
    PerClass,
    ReportDocument,
    ReportSchemaError,
    read_robustness,
)
from indexer.evaluation.evaluate import EvaluationError, Run, write_plot
from indexer.evaluation.sections import TOP_OVERLAP, sections
from indexer.evaluation.stats import (
    CONFIDENCE,
    DEFAULT_RESAMPLES,
    bootstrap_ci,
    bootstrap_means,
    compare_sentence,
    mcnemar_exact,
    paired_difference,
    percentile_interval,
)

log = logging.getLogger(__name__)

PAIR_METRICS = (("P@1", "precision", "1"), ("P@10", "precision", "10"), ("MAP@R", "ap_at_r", None))
GALLERY_TOP = 5


@dataclass
class ReportConfig:
    out: Path
    data_root: Optional[Path] = None  # to read images for the style measure and the galleries
    split: str = "val"
    embeddings: Path = Path(DEFAULTS.embeddings)  # where `embed check` leaves check.json files
    resamples: int = DEFAULT_RESAMPLES
    seed: int = 0
    style_queries: int = 500
    galleries: int = 8
    classes_shown: int = 5


# per-query columns -----------------------------------------------------------------------------


def metric_columns(run: Run) -> Dict[str, np.ndarray]:
    """Per-query values of every reported retrieval metric (queries with R > 0)."""
    pq = run.per_query
    cols = {f"P@{k}": v for k, v in pq.precision.items()}
    cols.update({f"R@{k}": v.astype(float) for k, v in pq.hit.items()})
    cols["R-precision"] = pq.r_precision
    cols["MAP@R"] = pq.ap_at_r
    return cols


def intervals(run: Run, resamples: int, seed: int, confidence: float = CONFIDENCE) -> ModelIntervals:
    """Every metric of a run with its percentile-bootstrap interval (retrieval metrics share their resamples)."""
    cols = metric_columns(run)
    names = list(cols)
    matrix = np.stack([cols[n] for n in names], 1)
    out: List[MetricInterval] = []
    if len(matrix):
        low, high = percentile_interval(bootstrap_means(matrix, resamples, seed), confidence)
        out = [
            MetricInterval(
                n, Interval(float(matrix[:, j].mean()), float(low[j]), float(high[j]), len(matrix), confidence)
            )
            for j, n in enumerate(names)
        ]
    out.append(
        MetricInterval("kNN@20", bootstrap_ci(run.per_query.knn_correct.astype(float), resamples, seed, confidence))
    )
    if run.dino_correct is not None:
        out.append(
            MetricInterval("DINO kNN top-1", bootstrap_ci(run.dino_correct.astype(float), resamples, seed, confidence))
        )
    return ModelIntervals(run.model, run.features, out)


def _pair_values(run: Run, key: str, k: Optional[str]) -> np.ndarray:
    return getattr(run.per_query, key)[k] if k else getattr(run.per_query, key)


def require_same_images(runs: Sequence[Run]) -> None:
    first = runs[0]
    for r in runs[1:]:
        if not np.array_equal(r.ids, first.ids) or list(r.class_ids) != list(first.class_ids):
            raise EvaluationError(
                f"{r.model} and {first.model} were not built from the same images: paired comparisons "
                f"need the same dataset and split (rebuild both from the same --data-root)"
            )


# the eight parts -------------------------------------------------------------------------------


def pairs(runs: Sequence[Run], resamples: int, seed: int) -> List[PairComparison]:
    out = []
    for a, b in itertools.combinations(runs, 2):
        metrics, sentences = [], []
        mcnemar = mcnemar_exact(a.per_query.hit["1"], b.per_query.hit["1"])
        for label, key, k in PAIR_METRICS:
            diff = paired_difference(_pair_values(a, key, k), _pair_values(b, key, k), resamples, seed)
            p = mcnemar.p_value if label == "P@1" else None
            metrics.append(PairedMetric(label, diff, p))
            sentences.append(compare_sentence(a.model, b.model, label, diff, p))
        out.append(PairComparison(a.model, b.model, metrics, mcnemar, sentences))
    return out


def per_class(runs: Sequence[Run], shown: int) -> PerClass:
    """Per-class P@10 of every model, and the classes where each model gains or loses most against the others."""
    from embed.sources.datasets import class_name

    labels = runs[0].labels[runs[0].per_query.valid]
    classes = np.unique(labels)
    names = np.asarray(runs[0].class_ids, dtype=object)[runs[0].per_query.valid]
    counts = np.bincount(labels, minlength=labels.max() + 1)[classes]
    table = np.stack(
        [
            np.bincount(labels, weights=r.per_query.precision["10"], minlength=labels.max() + 1)[classes] / counts
            for r in runs
        ]
    )
    class_ids = [str(names[np.flatnonzero(labels == c)[0]]) for c in classes]

    def figure(j: int, gain: np.ndarray) -> ClassFigure:
        return ClassFigure(class_ids[j], class_name(class_ids[j]), float(gain[j]), [float(v) for v in table[:, j]])

    movers = []
    for i, r in enumerate(runs):
        gain = table[i] - np.delete(table, i, axis=0).mean(axis=0)
        order = np.argsort(gain, kind="stable")
        movers.append(
            ClassMovers(
                r.model, [figure(j, gain) for j in order[::-1][:shown]], [figure(j, gain) for j in order[:shown]]
            )
        )
    return PerClass([r.model for r in runs], class_ids, table.tolist(), movers)


def agreement(runs: Sequence[Run]) -> List[Agreement]:
    out = []
    for a, b in itertools.combinations(runs, 2):
        ta, tb = a.neighbours.index[:, :TOP_OVERLAP], b.neighbours.index[:, :TOP_OVERLAP]
        overlap = (ta[:, :, None] == tb[:, None, :]).any(-1).sum(1) / ta.shape[1]
        test = mcnemar_exact(a.per_query.hit["1"], b.per_query.hit["1"])
        n = test.both + test.only_a + test.only_b + test.neither
        out.append(
            Agreement(
                a.model,
                b.model,
                float(overlap.mean()),
                TOP_OVERLAP,
                test.both / n,
                test.only_a / n,
                test.only_b / n,
                test.neither / n,
                n,
            )
        )
    return out


def appearance(runs: Sequence[Run], cfg: ReportConfig) -> Optional[Appearance]:
    """Colour and structure similarity of retrieved same-class neighbours vs random same-class pairs."""
    from indexer.evaluation.appearance import AppearanceCache, colour_similarity, structure_similarity

    if cfg.data_root is None:
        return None
    folder = Path(cfg.data_root) / cfg.split
    first = runs[0]
    valid_rows = np.flatnonzero(first.per_query.valid)
    rng = np.random.default_rng(cfg.seed)
    sample = np.sort(rng.choice(valid_rows, size=min(cfg.style_queries, len(valid_rows)), replace=False))
    cache = AppearanceCache(folder, first.relpaths)
    labels = first.labels
    similarity = {"colour": colour_similarity, "structure": structure_similarity}

    def score(q: int, others: Sequence[int]) -> Dict[str, float]:
        return {
            m: float(np.mean([f(cache[q], cache[o]) for o in others])) if len(others) else np.nan
            for m, f in similarity.items()
        }

    baseline_rows = []
    for q in sample:
        same = np.flatnonzero(labels == labels[q])
        baseline_rows.append(int(rng.choice(same[same != q])))
    baseline_scores = [score(q, [o]) for q, o in zip(sample, baseline_rows)]
    model_scores = [
        [score(q, [o for o in r.neighbours.index[q, :10] if labels[o] == labels[q]]) for q in sample] for r in runs
    ]
    measures, sentences = [], []
    for m in similarity:
        base = np.array([d[m] for d in baseline_scores])
        values = [np.array([d[m] for d in rows]) for rows in model_scores]
        per_model, versus = [], []
        for r, v in zip(runs, values):
            has = ~np.isnan(v)
            interval = bootstrap_ci(v[has], cfg.resamples, cfg.seed)
            diff = paired_difference(v[has], base[has], cfg.resamples, cfg.seed)
            per_model.append(ModelInterval(r.model, interval))
            versus.append(ModelInterval(r.model, diff))
            sentences.append(_appearance_sentence(r.model, m, interval, diff))
        pair_rows = []
        for (a, va), (b, vb) in itertools.combinations(zip(runs, values), 2):
            both = ~np.isnan(va) & ~np.isnan(vb)
            diff = paired_difference(va[both], vb[both], cfg.resamples, cfg.seed)
            pair_rows.append(PairInterval(a.model, b.model, diff))
            sentences.append(
                compare_sentence(
                    a.model,
                    b.model,
                    f"{m} similarity of same-class neighbours",
                    diff,
                    better="finds neighbours closer in appearance than",
                )
            )
        measures.append(AppearanceMeasure(m, bootstrap_ci(base, cfg.resamples, cfg.seed), per_model, versus, pair_rows))
    sentences.append(
        "What this supports: the figures measure low-level appearance only (colour distribution in CIELAB, "
        "structure of 32x32 greyscale thumbnails) between a query and its retrieved images of the same class. A model "
        "'picks stylistically closer images' in this sense only where its figure is above the random same-class "
        "baseline and, against another model, where the paired difference above excludes zero."
    )
    return Appearance(
        int(len(sample)),
        "same-class images among each model's top 10",
        "one random other image of the query's class",
        measures,
        sentences,
    )


def _appearance_sentence(model: str, measure: str, value: Interval, diff: Interval) -> str:
    ci = diff.words(signed=True)
    if not diff.excludes_zero():
        return (
            f"{model}'s same-class neighbours are no closer in {measure} to the query than random same-class "
            f"images (mean {value.mean:.3f}; difference {diff.mean:+.3f}, {ci})."
        )
    word = "closer" if diff.mean > 0 else "less close"
    return (
        f"{model}'s same-class neighbours are {word} in {measure} to the query than random same-class images "
        f"(mean {value.mean:.3f}; difference {diff.mean:+.3f}, {ci})."
    )


def read_check(embeddings: Path, model: str, dataset: str, split: str) -> Optional[AccuracyCheck]:
    """The ``python -m embed check`` result for a model, where one was saved (check.json beside the manifest)."""
    import json

    from embed.models.accuracy_check import accuracy_path

    path = accuracy_path(Path(embeddings), model, dataset, split)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError:
        log.warning("ignoring unreadable %s", path)
        return None
    missing = [k for k in ("top1", "top5", "n") if k not in data]
    if missing:
        log.warning("ignoring %s: no %s", path, ", ".join(missing))
        return None
    return AccuracyCheck(
        float(data["top1"]), float(data["top5"]), int(data["n"]), str(data.get("weights_source", "")), str(path)
    )


def accuracy(runs: Sequence[Run], cfg: ReportConfig, dataset: str) -> Accuracy:
    rows = [AccuracyRow(r.model, read_check(cfg.embeddings, r.model, dataset, cfg.split)) for r in runs]
    found = {row.model: row.check for row in rows if row.check}
    sentences = []
    if len(found) >= 2:
        by_acc = sorted(found, key=lambda m: -found[m].top1)
        p10 = {r.model: float(r.per_query.precision["10"].mean()) for r in runs if r.model in found}
        by_ret = sorted(found, key=lambda m: -p10[m])
        same = "the same order" if by_acc == by_ret else "a different order"
        sentences.append(
            f"Classifier top-1 ranks {' > '.join(by_acc)}; retrieval P@10 ranks {' > '.join(by_ret)}: {same}."
        )
    missing = [row.model for row in rows if not row.check]
    if missing:
        commands = " and ".join(f"`{check_command(m, cfg)}`" for m in missing)
        sentences.append(
            f"No classifier accuracy for {', '.join(missing)}: run {commands} to add it"
            f"{'' if cfg.data_root else ' (with --data-root DIR, the folder holding the images)'}."
        )
    return Accuracy(rows, sentences)


def check_command(model: str, cfg: ReportConfig) -> str:
    """The ``embed check`` run that adds ``model``'s classifier accuracy to the next report, as it runs."""
    import shlex

    parts = ["python -m embed check", f"--model {shlex.quote(model)}", f"--split {shlex.quote(cfg.split)}"]
    if cfg.data_root:
        parts.append(f"--data-root {shlex.quote(str(cfg.data_root))}")
    if Path(cfg.embeddings) != Path(DEFAULTS.embeddings):
        parts.append(f"--out {shlex.quote(str(cfg.embeddings))}")
    return " ".join(parts)


def disagreement_queries(runs: Sequence[Run], n: int) -> List[int]:
    """Rows where the models' P@10 spread most (then where P@1 differs), ties by row."""
    valid = np.flatnonzero(runs[0].per_query.valid)
    p10 = np.stack([r.per_query.precision["10"] for r in runs])
    p1 = np.stack([r.per_query.hit["1"] for r in runs])
    spread = p10.max(0) - p10.min(0) + 0.01 * (p1.max(0) != p1.min(0))
    order = np.lexsort((valid, -spread))
    return [int(valid[j]) for j in order[:n]]


GALLERY_LABEL_PT = 10


def gallery(runs: Sequence[Run], row: int, folder: Path, path: Path) -> Gallery:
    """A grid: one line per model, the query then its top 5 with hit (green) / miss (red) borders."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from embed.sources.datasets import class_name
    from embed.sources.imaging import load_rgb

    first = runs[0]
    # labels of 10 pt at 100 dpi stay readable where the Evaluation page and report.html show the PNG (7 pt at
    # 72 dpi did not)
    fig, axes = plt.subplots(
        len(runs), GALLERY_TOP + 1, figsize=(2.0 * (GALLERY_TOP + 1), 2.3 * len(runs)), dpi=100, squeeze=False
    )
    columns = []
    for i, r in enumerate(runs):
        top = r.neighbours.index[row, :GALLERY_TOP]
        hits = [bool(r.labels[j] == r.labels[row]) for j in top]
        p10 = float(r.per_query.precision["10"][np.flatnonzero(r.per_query.valid) == row][0])
        columns.append(GalleryColumn(r.model, [int(r.ids[j]) for j in top], hits, p10))
        for j, (ax, img_row) in enumerate(zip(axes[i], [row] + list(top))):
            ax.imshow(load_rgb(folder / first.relpaths[img_row]))
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(r.model, fontsize=GALLERY_LABEL_PT + 1)
                ax.set_title(f"query\n{class_name(first.class_ids[row])[:20]}", fontsize=GALLERY_LABEL_PT)
                continue
            colour = "#1a9641" if hits[j - 1] else "#d7191c"
            for side in ax.spines.values():
                side.set_edgecolor(colour)
                side.set_linewidth(4)
            ax.set_title(
                ("hit" if hits[j - 1] else "miss") + f"\n{class_name(first.class_ids[img_row])[:20]}",
                fontsize=GALLERY_LABEL_PT,
                color=colour,
            )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Gallery(row, int(first.ids[row]), first.relpaths[row], first.class_ids[row], columns, path.name)


# plots -----------------------------------------------------------------------------------------


def ci_plot(
    model_intervals: Sequence[ModelIntervals],
    path: Path,
    metrics: Sequence[str] = ("P@1", "P@10", "R-precision", "MAP@R", "kNN@20"),
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4), dpi=110)
    width = 0.8 / max(1, len(model_intervals))
    level = (
        model_intervals[0].metrics[0].interval.level if model_intervals and model_intervals[0].metrics else CONFIDENCE
    )
    from indexer.evaluation.colours import model_colours

    colours = model_colours([mi.model for mi in model_intervals])
    shown: List[str] = []
    for i, mi in enumerate(model_intervals):
        shown = [k for k in metrics if mi.get(k)]
        found = [mi.get(k) for k in shown]
        x = np.arange(len(shown)) + i * width
        mean = np.array([v.mean for v in found if v])
        err = np.array([[v.mean - v.low, v.high - v.mean] for v in found if v]).T
        ax.bar(x, mean, width, yerr=err, capsize=3, color=colours[mi.model], label=mi.model)
    ax.set_xticks(np.arange(len(shown)) + width * (len(model_intervals) - 1) / 2)
    ax.set_xticklabels(shown)
    ax.set_ylabel(f"value ({level:.0%} bootstrap CI)")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def class_scatter(classes: PerClass, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    combos = list(itertools.combinations(range(len(classes.models)), 2))
    fig, axes = plt.subplots(1, len(combos), figsize=(4.2 * len(combos), 4), dpi=100, squeeze=False)
    for ax, (a, b) in zip(axes[0], combos):
        ax.scatter(np.array(classes.p_at_10[a]), np.array(classes.p_at_10[b]), s=10, alpha=0.6)
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
        ax.set_xlabel(f"{classes.models[a]}: per-class P@10")
        ax.set_ylabel(f"{classes.models[b]}: per-class P@10")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# the document ----------------------------------------------------------------------------------


class MarkupDocument:
    """Blocks rendered twice: Markdown (PNG links) and self-contained HTML (PNGs inline)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.blocks: List[Tuple] = []

    def h(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def paragraphs(self, texts: Sequence[str]) -> None:
        for text in texts:
            self.p(text)

    def table(self, head: Sequence[str], rows: Sequence[Sequence]) -> None:
        self.blocks.append(("table", list(head), [[str(c) for c in r] for r in rows]))

    def image(self, name: str, caption: str) -> None:
        self.blocks.append(("img", name, caption))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "table":
                out.append("| " + " | ".join(b[1]) + " |\n|" + "---|" * len(b[1]))
                out[-1] += "".join("\n| " + " | ".join(r) + " |" for r in b[2])
            else:
                out.append(f"![{b[2]}]({b[1]})")
            out.append("")
        return "\n".join(out)

    def html(self, title: str) -> str:
        e = html.escape
        out = [
            f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
            "table{border-collapse:collapse;margin:1em 0;font-size:90%}td,th{border:1px solid #ccc;padding:3px 7px}"
            "th{background:#f2f2f2}img{max-width:100%}figcaption{color:#555;font-size:90%}</style></head><body>"
        ]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{e(b[1])}</p>")
            elif b[0] == "table":
                out.append(
                    "<table><tr>"
                    + "".join(f"<th>{e(c)}</th>" for c in b[1])
                    + "</tr>"
                    + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in b[2])
                    + "</table>"
                )
            else:
                data = base64.b64encode((self.folder / b[1]).read_bytes()).decode()
                out.append(
                    f"<figure><img alt='{e(b[2])}' src='data:image/png;base64,{data}'>"
                    f"<figcaption>{e(b[2])}</figcaption></figure>"
                )
        out.append("</body></html>")
        return "\n".join(out)


def build_report(evaluation: Evaluation, runs: Sequence[Run], cfg: ReportConfig) -> ReportDocument:
    """Compute all eight parts and write DIR/report.{json,md,html}; returns the document."""
    out = Path(cfg.out)
    (out / "galleries").mkdir(parents=True, exist_ok=True)
    proto = evaluation.protocol
    variant = runs[0].features
    primary = [r for r in runs if r.features == variant]
    require_same_images(primary)
    log.info("report: confidence intervals (%d resamples)", cfg.resamples)
    all_intervals = [intervals(r, cfg.resamples, cfg.seed) for r in runs]
    primary_intervals = [mi for mi in all_intervals if mi.features == variant]
    several = len(primary) > 1
    log.info("report: appearance similarity on %d queries", cfg.style_queries)
    dino = {r.model: r.dino_knn for r in evaluation.results if r.features == variant and r.dino_knn}
    dino_rows = [
        DinoRow(mi.model, interval, dino[mi.model].protocol)
        for mi in primary_intervals
        if mi.model in dino and (interval := mi.get("DINO kNN top-1")) is not None
    ]
    galleries = []
    if cfg.data_root is not None and several:
        folder = Path(cfg.data_root) / cfg.split
        galleries = [
            gallery(primary, row, folder, out / "galleries" / f"query_{int(primary[0].ids[row])}.png")
            for row in disagreement_queries(primary, cfg.galleries)
        ]
    per_class_part = per_class(primary, cfg.classes_shown) if several else None
    figures = Figures(
        "precision_at_k.png", "confidence_intervals.png", "per_class_p_at_10.png" if per_class_part else None
    )
    write_plot(evaluation, out / figures.precision_at_k)
    ci_plot(primary_intervals, out / figures.confidence_intervals)
    if per_class_part and figures.per_class:
        class_scatter(per_class_part, out / figures.per_class)
    pair_part = pairs(primary, cfg.resamples, cfg.seed) if several else []
    doc = ReportDocument(
        protocol=proto,
        variant_compared=variant,
        bootstrap=Bootstrap(cfg.resamples, cfg.seed),
        results=evaluation.results,
        intervals=all_intervals,
        pairs=pair_part,
        per_class=per_class_part,
        agreement=agreement(primary) if several else [],
        appearance=appearance(primary, cfg),
        dino_knn=dino_rows,
        accuracy=accuracy(primary, cfg, proto.dataset),
        galleries=galleries,
        figures=figures,
        sentences=[s for p in pair_part for s in p.sentences],
        robustness=robustness_beside(out),
    )
    write_report_files(doc, out)
    return doc


def render(doc: ReportDocument, folder: Path) -> MarkupDocument:
    proto = doc.protocol
    d = MarkupDocument(folder)
    d.h(f"Retrieval report: {proto.dataset}/{proto.split}", 1)
    d.p(
        f"Protocol: {proto.name}; {proto.distance}; {proto.excluded}. Confidence intervals: "
        f"{doc.bootstrap.method}, {doc.bootstrap.level:.0%}, {doc.bootstrap.resamples} resamples, seed "
        f"{doc.bootstrap.seed}. Comparisons use the {doc.variant_compared} features."
        + (f" Labels: {proto.labels}." if proto.labels else "")
    )
    if doc.random_weight_models:
        d.p(
            f"Warning: {', '.join(doc.random_weight_models)} use RANDOM weights; their figures measure nothing but "
            f"chance."
        )
    for section in sections(doc):
        d.h(section.title)
        if section.note:
            d.p(section.note)
        for table in section.tables:
            if table.caption:
                d.p(table.caption)
            d.table(table.headers, table.rows)
        for picture in section.pictures:
            d.image(picture.file, picture.caption)
        d.paragraphs(section.sentences)
    d.h("8. Where the models disagree most")
    for g in doc.galleries:
        marks = "; ".join(f"{c.model}: P@10 {c.p_at_10:.1f}" for c in g.columns)
        d.image(f"galleries/{g.png}", f"query id {g.query_id} ({g.relpath}, {g.class_id}): {marks}")
    if not doc.galleries:
        d.p("No galleries: they need two or more models and --data-root.")
    if doc.robustness:
        from indexer.evaluation.robustness_tables import add_robustness_section

        add_robustness_section(d, doc.robustness, title="9. Robustness: transformed queries")
    ann = ann_beside(folder)
    if ann is not None:
        from indexer.evaluation.ann import add_ann_section

        add_ann_section(d, ann, title="10. Approximate index: does the ranking survive it?")
    return d


def ann_beside(folder: Path):
    """The ANN document (``indexer ann --report DIR``) in the report's folder, or None; one of another schema is
    left out with a warning, as the robustness document is."""
    from indexer.evaluation.ann import read_ann

    try:
        return read_ann(folder)
    except ReportSchemaError as e:
        log.warning("%s; the report leaves the approximate-index section out", e)
        return None


def robustness_beside(folder: Path) -> Optional[Dict]:
    """The robustness document in the report's folder; one of another schema is left out with a warning, so that
    the evaluation just computed is still written."""
    try:
        return read_robustness(folder)
    except ReportSchemaError as e:
        log.warning("%s; the report leaves the robustness section out", e)
        return None


def write_report_files(doc: ReportDocument, folder: Path) -> None:
    """report.json, report.md and report.html: the one way all three are written, so they always agree."""
    folder = Path(folder)
    (folder / "report.json").write_text(doc.to_json())
    page = render(doc, folder)
    (folder / "report.md").write_text(page.markdown())
    (folder / "report.html").write_text(page.html(f"Retrieval report: {doc.protocol.dataset}/{doc.protocol.split}"))
