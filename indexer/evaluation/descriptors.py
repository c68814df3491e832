"""Does "which backbone retrieves better" hold under the descriptor a retrieval engineer would deploy?

Every model is evaluated under every descriptor asked (default: the model's own pooling raw, GeM p=3 with unit
length, and GeM p=3 whitened), on the same queries: leave-one-out over the evaluated images, exact, outside
Milvus, with percentile-bootstrap intervals and paired differences between models per descriptor. The vectors
are read back from each pooling's collection (``indexer build --descriptor gem3``), post-processed here.

Whitening is learned honestly: with ``eval_classes`` a seeded draw of that many classes is evaluated (for every
descriptor alike) and the whitening is learned on the rows of the other classes of the same collection
(``indexer.whitening.ClassSplit``), or it is read from a file learned elsewhere (``whitening_files``: ``indexer
whiten`` on another split, or on the classes a draw leaves out); the learned artifact is stored with its
identity, a file's identity is checked against the vectors it whitens (model, weights, pooling), and a whitening
whose images overlap the evaluated ones is refused (``check_disjoint``), whichever its source. Each -white row
says which whitening it used and where it came from.

Query-side variants, labelled as such: alpha-query expansion (Radenović et al.: each query is replaced by the
unit-length sum of itself and its k nearest neighbours weighted by similarity ** alpha, then searched again)
and database-side augmentation (every database vector is replaced in the same way before the search). Both
are computed exactly here, for unit-length descriptors only (their weights are cosine similarities).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from embed.common.descriptor import Descriptor, parse_descriptors
from embed.common.identity import EmbeddingKey, VectorSetIdentity
from embed.common.vectors import l2_normalize
from indexer.evaluation.document import Interval
from indexer.evaluation.exact import ExactSearch, Neighbours
from indexer.evaluation.metrics import encode_labels, needed_k, retrieval_metrics
from indexer.evaluation.stats import bootstrap_ci, paired_difference
from indexer.milvus_store import StoreError, VectorStore
from indexer.whitening import ClassSplit, Whitening, WhiteningRefused, check_disjoint, learn_from_rows

log = logging.getLogger(__name__)

DEFAULT_DESCRIPTORS = "default,gem3-l2,gem3-white"
METRICS = ("P@1", "P@10", "MAP@R")  # the metrics each descriptor row reports, with intervals
ORDER_METRIC = "MAP@R"  # the metric that orders the models and picks each model's best descriptor


@dataclass(frozen=True)
class QueryExpansion:
    """alpha-QE (``kind="aqe"``) or database-side augmentation (``kind="dba"``) with k neighbours, weights sim ** alpha."""

    kind: str
    k: int = 3
    alpha: float = 3.0

    @property
    def label(self) -> str:
        what = "αQE" if self.kind == "aqe" else "DBA"
        return f"{what} (k={self.k}, α={self.alpha:g})"


@dataclass
class DescriptorEvalConfig:
    models: Sequence[str]
    dataset: str
    split: str
    descriptors: Sequence[Descriptor] = field(default_factory=lambda: parse_descriptors(DEFAULT_DESCRIPTORS))
    eval_classes: Optional[int] = None  # None: every class evaluated (a whitening must then come from elsewhere)
    class_seed: int = 0
    expansions: Sequence[QueryExpansion] = ()
    # whitenings learned elsewhere (`indexer whiten`): each serves the model and pooling its identity names, for
    # the -white descriptor of its output dimension (-white: the one keeping every dimension); the -white
    # descriptors no file serves are learned here on the classes not evaluated
    whitening_files: Sequence[Path] = ()
    embeddings: Optional[Path] = None  # where learned whitenings are stored (default: beside the embeddings)
    device: str = "cpu"
    seed: int = 0
    progress: bool = True
    data_root: Optional[str] = None  # for the build commands the errors suggest


@dataclass
class DescriptorRun:
    model: str
    descriptor: str  # the descriptor's name, e.g. gem3-white
    variant: str  # "" or a query-side step's label
    collection: str
    n_queries: int
    metrics: Dict[str, Interval]
    whitening: str = ""  # WhiteningIdentity.describe() when whitened
    whitening_source: str = ""  # where that whitening came from: a file given, or learned in this run
    whitening_given: bool = False  # from a file (--whitening), not learned in this run
    per_query: Dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # metric -> values (not stored)

    @property
    def row_label(self) -> str:
        return self.descriptor + (f" + {self.variant}" if self.variant else "")


@dataclass
class PairedDifference:
    descriptor: str  # row label (descriptor + variant)
    a: str
    b: str
    metric: str
    difference: Interval  # a - b over the same queries


@dataclass
class DescriptorSection:
    dataset: str
    split: str
    protocol: str
    descriptors: List[str]  # row labels, the default first
    models: List[str]
    runs: List[DescriptorRun]
    differences: List[PairedDifference]
    order_sentences: List[str]
    best_sentences: List[str]
    seed: int = 0

    def run(self, model: str, label: str) -> DescriptorRun:
        return next(r for r in self.runs if r.model == model and r.row_label == label)


def _default_pooling(model: str) -> str:
    from embed.models.catalog import get_spec

    return get_spec(model).default_pooling


def _read_pooling(store: VectorStore, cfg: DescriptorEvalConfig, model: str, d: Descriptor):
    """(collection name, identity, ids, raw vectors, class ids) of ``d``'s pooling for ``model``."""
    import shlex

    pooled = d.pooled
    key = EmbeddingKey(model, cfg.dataset, cfg.split, pooled.key_part(_default_pooling(model)))
    meta = store.meta(key.collection_name)
    if meta is None:
        root = shlex.quote(cfg.data_root) if cfg.data_root else "DIR"
        flag = f" --descriptor {pooled.name}" if key.descriptor else ""
        raise StoreError(
            f"no collection for {model} pooled as {pooled.name} on {cfg.dataset}/{cfg.split}: run `python -m indexer "
            f"build --model {model} --split {cfg.split} --data-root {root}{flag}` first"
        )
    if meta.normalized and not d.normalized:
        raise StoreError(
            f"{key.collection_name} holds unit-length vectors: {d.name} needs the raw ones (build without -l2)"
        )
    ids, vectors, class_ids, _ = store.read_all(key.collection_name, progress=cfg.progress)
    return key.collection_name, meta.identity, ids, vectors, list(class_ids)


GivenWhitenings = Dict[Tuple[str, Descriptor], Whitening]  # (model, -white descriptor) -> the file serving it


def _learned_on(whitening: Whitening) -> str:
    """'effnet-lite0's gem3 vectors, 1280->512' (what a file can serve)."""
    src = whitening.identity.source
    pooling = src.descriptor or _default_pooling(src.model)
    return f"{src.model}'s {pooling} vectors, {whitening.identity.dim_in}->{whitening.identity.dim_out}"


def _file_for(files: Sequence[Whitening], model: str, d: Descriptor) -> Optional[Whitening]:
    """The file that serves ``model``'s ``d``: learned on its vectors of ``d``'s pooling, into ``d``'s dimensions
    (``-white``: all of them); None when no file was learned on that pooling; refused when files were but none
    fits, or two do."""
    pooling = d.pooled.key_part(_default_pooling(model))
    mine = [w for w in files if (w.identity.source.model, w.identity.source.descriptor) == (model, pooling)]
    fits = [w for w in mine if w.identity.dim_out == (d.whiten_dim or w.identity.dim_in)]
    if len(fits) > 1:
        raise WhiteningRefused(
            f"--whitening: {', '.join(str(w.path) for w in fits)} all serve {model} {d.name}: give one of them"
        )
    if mine and not fits:
        wanted = f"{d.whiten_dim} dimensions" if d.whiten_dim else "every dimension (no --dim)"
        raise WhiteningRefused(
            f"{model} {d.name} needs a whitening into {wanted}; given for its {d.pooled.name} vectors: "
            + "; ".join(f"{w.path} ({_learned_on(w)})" for w in mine)
            + f". Ask for {d.pooled.name}-white{mine[0].identity.dim_out}, or learn one with `indexer whiten "
            f"--pooling {d.pooled.name}{f' --dim {d.whiten_dim}' if d.whiten_dim else ''}`"
        )
    return fits[0] if fits else None


def given_whitenings(cfg: DescriptorEvalConfig) -> GivenWhitenings:
    """Which -white descriptor of which model each of ``cfg.whitening_files`` serves; a file serving none is refused
    (it was given for a reason: another model, pooling or dimension than asked is a mistake to say, not to skip)."""
    files = [Whitening.load(path) for path in cfg.whitening_files]
    given: GivenWhitenings = {}
    for model in cfg.models:
        for d in cfg.descriptors:
            if d.whiten and (found := _file_for(files, model, d)) is not None:
                given[(model, d)] = found
    unused = [w for w in files if not any(w is used for used in given.values())]
    if unused:
        asked = ", ".join(d.name for d in cfg.descriptors if d.whiten) or "none"
        raise WhiteningRefused(
            "--whitening: "
            + "; ".join(f"{w.path} (learned on {_learned_on(w)})" for w in unused)
            + f" serves none of the -white descriptors asked ({asked}) of {', '.join(cfg.models)}"
        )
    return given


def _whitening_for(
    cfg: DescriptorEvalConfig,
    model: str,
    d: Descriptor,
    pooled: Tuple[VectorSetIdentity, np.ndarray, List[str]],
    evaluated: List[str],
    given: Optional[Whitening],
) -> Tuple[Whitening, str]:
    """(a whitening the evaluation may use, where it came from): ``given`` (a file, checked), else learned on
    the classes not evaluated. ``pooled``: the identity, raw vectors and classes of ``d``'s pooling."""
    identity, vectors, class_ids = pooled
    if given is not None:
        whitening, source = given, f"from --whitening {given.path}"
    elif cfg.eval_classes is None:
        raise WhiteningRefused(
            f"{d.name}: every class is evaluated, so a whitening learned on this split would see the evaluated "
            f"images; pass --eval-classes N (learn it on the other classes) or --whitening with one learned on "
            f"another split (`indexer whiten`)"
        )
    else:
        whitening = learn_from_rows(
            vectors, class_ids, identity, ClassSplit(cfg.eval_classes, cfg.class_seed), d.whiten_dim
        )
        source = "learned in this run on the classes not evaluated"
        from indexer.whitening import whitening_folder

        if cfg.embeddings is not None:
            source += f", stored as {whitening.save(whitening_folder(cfg.embeddings, identity))}"
    try:
        whitening.check_applies_to(identity)
        check_disjoint(whitening.identity, identity, evaluated)
    except WhiteningRefused as exc:
        raise WhiteningRefused(f"{model} {d.name}, whitening {source}: {exc}") from None
    if d.whiten_dim is not None and whitening.identity.dim_out != d.whiten_dim:
        raise WhiteningRefused(f"{d.name}: the whitening maps to {whitening.identity.dim_out} dimensions")
    return whitening, source


def expand_queries(vectors: np.ndarray, neigh: Neighbours, qe: QueryExpansion) -> np.ndarray:
    """Each unit-length row replaced by unit(x + sum_j sim(x, n_j) ** alpha * n_j) over its k nearest others."""
    x = np.asarray(vectors, np.float64)
    nbrs = neigh.index[:, : qe.k]
    sims = np.clip(np.einsum("nd,nkd->nk", x, x[nbrs]), 0.0, None)
    out = x + np.einsum("nk,nkd->nd", sims**qe.alpha, x[nbrs])
    return l2_normalize(out)


def neighbours_of(queries: np.ndarray, database: np.ndarray, k: int) -> Neighbours:
    """Exact k nearest database rows of each query row i, row i itself excluded (leave-one-out): the expanded
    queries of alpha-QE against the unexpanded database, by the one exact search (float64, ties by row)."""
    rows, distances = ExactSearch(database).search(queries, k, exclude=np.arange(len(queries)))
    return Neighbours(rows, distances.astype(np.float32))


def _metrics(
    neigh: Neighbours, labels: np.ndarray, seed: int
) -> Tuple[Dict[str, Interval], Dict[str, np.ndarray], int]:
    m = retrieval_metrics(neigh, labels, (1, 10), 20)
    assert m.per_query is not None
    values = {"P@1": m.per_query.precision["1"], "P@10": m.per_query.precision["10"], "MAP@R": m.per_query.ap_at_r}
    return {k: bootstrap_ci(v, seed=seed) for k, v in values.items()}, values, m.n_queries


def evaluate_descriptors(cfg: DescriptorEvalConfig, store: VectorStore) -> DescriptorSection:
    given = given_whitenings(cfg)  # before any vector is read: a file given by mistake is said at once
    runs: List[DescriptorRun] = []
    evaluated: Optional[List[str]] = None
    learning: List[str] = []
    ids_of_first: Optional[np.ndarray] = None
    for model in cfg.models:
        cache: Dict[str, tuple] = {}
        for d in cfg.descriptors:
            pooled_name = d.pooled.name
            if pooled_name not in cache:
                cache[pooled_name] = _read_pooling(store, cfg, model, d)
            collection, identity, ids, vectors, class_ids = cache[pooled_name]
            if evaluated is None:
                if cfg.eval_classes is not None:
                    evaluated, learning = ClassSplit(cfg.eval_classes, cfg.class_seed).split(class_ids)
                else:
                    evaluated = sorted(set(class_ids))
            rows = np.isin(np.asarray(class_ids, dtype=object), evaluated)
            if ids_of_first is None:
                ids_of_first = ids[rows]
            elif not np.array_equal(ids[rows], ids_of_first):
                raise StoreError(
                    f"{collection} holds other images than the first model's collection: the models would not be "
                    f"compared on the same queries; build every collection from the same images (same --limit)"
                )
            whitening_text = whitening_source = ""
            from_file = given.get((model, d))
            if d.whiten:
                whitening, whitening_source = _whitening_for(
                    cfg, model, d, (identity, vectors, class_ids), evaluated, from_file
                )
                feats = whitening.apply(vectors[rows])
                whitening_text = whitening.identity.describe()
            elif d.unit_length:
                feats = l2_normalize(vectors[rows])
            else:
                feats = np.asarray(vectors[rows], np.float32)
            labels = encode_labels([c for c, r in zip(class_ids, rows) if r])
            k = needed_k(labels, (1, 10), 20)
            neigh = ExactSearch(feats).leave_one_out(k, device=cfg.device)
            metrics, values, nq = _metrics(neigh, labels, cfg.seed)
            base = DescriptorRun(
                model,
                d.name,
                "",
                collection,
                nq,
                metrics,
                whitening=whitening_text,
                whitening_source=whitening_source,
                whitening_given=from_file is not None,
                per_query=values,
            )
            runs.append(base)
            log.info("%s/%s: %s", model, d.name, "  ".join(f"{m} {metrics[m].mean:.4f}" for m in METRICS))
            for qe in cfg.expansions:
                if not d.normalized:
                    continue  # their weights are cosine similarities: unit-length descriptors only
                if qe.kind == "aqe":
                    expanded = neighbours_of(expand_queries(feats, neigh, qe), feats, k)
                else:
                    db = expand_queries(feats, neigh, qe)
                    expanded = ExactSearch(db).leave_one_out(k, device=cfg.device)
                metrics, values, nq = _metrics(expanded, labels, cfg.seed)
                runs.append(replace(base, variant=qe.label, n_queries=nq, metrics=metrics, per_query=values))
    assert evaluated is not None
    return _section(cfg, runs, evaluated, learning)


def _section(
    cfg: DescriptorEvalConfig, runs: List[DescriptorRun], evaluated: List[str], learning: List[str]
) -> DescriptorSection:
    labels: List[str] = []
    for r in runs:
        if r.row_label not in labels:
            labels.append(r.row_label)
    models = list(dict.fromkeys(r.model for r in runs))
    n_classes = len(evaluated) + len(learning)
    whitened = [r for r in runs if r.whitening]
    if cfg.eval_classes is not None:
        learned_here = any(not r.whitening_given for r in whitened)
        classes = ClassSplit(cfg.eval_classes, cfg.class_seed).describe(n_classes, whitening=learned_here)
    else:
        classes = f"all {len(evaluated)} classes evaluated"
    protocol = (
        f"leave-one-out retrieval over the images of the evaluated classes of {cfg.dataset}/{cfg.split} ({classes}), "
        f"the same queries for every model and descriptor; exact squared-L2 neighbours computed outside Milvus from "
        f"the vectors read back from each pooling's collection; means with {int(100 * 0.95)}% percentile-bootstrap "
        f"intervals over queries (seed {cfg.seed}); differences paired over the same queries. Query-side variants "
        f"are labelled with their parameters."
        + (" Each -white row's whitening and where it came from are listed below the sentences." if whitened else "")
    )
    differences: List[PairedDifference] = []
    for label in labels:
        for i, a in enumerate(models):
            for b in models[i + 1 :]:
                ra, rb = _find(runs, a, label), _find(runs, b, label)
                if ra is None or rb is None:
                    continue
                for metric in METRICS:
                    diff = paired_difference(ra.per_query[metric], rb.per_query[metric], seed=cfg.seed)
                    differences.append(PairedDifference(label, a, b, metric, diff))
    section = DescriptorSection(cfg.dataset, cfg.split, protocol, labels, models, runs, differences, [], [], cfg.seed)
    section.order_sentences = [order_sentence(section, label) for label in labels]
    section.best_sentences = [best_sentence(section, model) for model in models]
    return section


def _find(runs: Sequence[DescriptorRun], model: str, label: str) -> Optional[DescriptorRun]:
    return next((r for r in runs if r.model == model and r.row_label == label), None)


def model_order(section: DescriptorSection, label: str, metric: str = ORDER_METRIC) -> List[str]:
    present = [m for m in section.models if _find(section.runs, m, label) is not None]
    return sorted(present, key=lambda m: -section.run(m, label).metrics[metric].mean)


def _unresolved_pairs(section: DescriptorSection, label: str, metric: str) -> List[Tuple[str, str]]:
    return [
        (p.a, p.b)
        for p in section.differences
        if p.descriptor == label and p.metric == metric and not p.difference.excludes_zero()
    ]


def order_sentence(section: DescriptorSection, label: str, metric: str = ORDER_METRIC) -> str:
    """Is the models' order under ``label`` the same as under the reference (the first descriptor asked: the
    default pooling unless the list starts otherwise)?"""
    base = section.descriptors[0]
    order, base_order = model_order(section, label, metric), model_order(section, base, metric)
    ranked = " > ".join(order)
    ties = _unresolved_pairs(section, label, metric)
    tie_text = (
        "; not separated by their paired intervals: " + ", ".join(f"{a} vs {b}" for a, b in ties)
        if ties
        else "; every pair separated by its paired interval"
    )
    if label == base:
        return f"{label} (the reference, the first descriptor asked): order by {metric} {ranked}{tie_text}."
    same = "the same as" if order == base_order else "NOT the same as"
    return f"{label}: order by {metric} {ranked}, {same} under {base} ({' > '.join(base_order)}){tie_text}."


def best_sentence(section: DescriptorSection, model: str, metric: str = ORDER_METRIC) -> str:
    """Which descriptor is best for ``model`` (query-side variants aside), with its interval and its paired
    difference from the default; then the best query-side variant, if any was run."""
    mine = [r for r in section.runs if r.model == model]
    base = mine[0]

    def versus(run: DescriptorRun) -> str:
        m = run.metrics[metric]
        text = f"{run.row_label}, {metric} {m.mean:.4f} ({m.words()})"
        if run is not base:
            diff = paired_difference(run.per_query[metric], base.per_query[metric], seed=section.seed)
            text += f", {diff.mean:+.4f} over {base.row_label} ({diff.words(signed=True)})"
        return text

    best = max((r for r in mine if not r.variant), key=lambda r: r.metrics[metric].mean)
    text = f"{model}: best descriptor {versus(best)}"
    variants = [r for r in mine if r.variant]
    if variants:
        text += f"; with a query-side step: {versus(max(variants, key=lambda r: r.metrics[metric].mean))}"
    return text + "."


# output -----------------------------------------------------------------------------------------


def to_markdown(section: DescriptorSection, plot_name: Optional[str] = None) -> str:
    lines = [f"## Descriptors: {section.dataset}/{section.split}", "", section.protocol, ""]
    header = "| model | descriptor | queries | " + " | ".join(METRICS) + " |"
    lines += [header, "|" + "---|" * (3 + len(METRICS))]
    for label in section.descriptors:
        for model in section.models:
            r = _find(section.runs, model, label)
            if r is None:
                continue
            cells = [f"{r.metrics[m].mean:.4f} [{r.metrics[m].low:.4f}, {r.metrics[m].high:.4f}]" for m in METRICS]
            lines.append(f"| {model} | {label} | {r.n_queries} | " + " | ".join(cells) + " |")
    lines += ["", "Paired differences between models (same queries), per descriptor:", ""]
    lines += ["| descriptor | a − b | " + " | ".join(METRICS) + " |", "|" + "---|" * (2 + len(METRICS))]
    pairs = list(dict.fromkeys((p.descriptor, p.a, p.b) for p in section.differences))
    for label, a, b in pairs:
        cells = []
        for m in METRICS:
            p = next(x for x in section.differences if (x.descriptor, x.a, x.b, x.metric) == (label, a, b, m))
            mark = "" if p.difference.excludes_zero() else " (n.s.)"
            cells.append(f"{p.difference.mean:+.4f} [{p.difference.low:+.4f}, {p.difference.high:+.4f}]{mark}")
        lines.append(f"| {label} | {a} − {b} | " + " | ".join(cells) + " |")
    lines += ["", "Is the order of the models the same as under the default pooling?", ""]
    lines += [f"- {s}" for s in section.order_sentences]
    lines += ["", "Which descriptor is best for each model?", ""]
    lines += [f"- {s}" for s in section.best_sentences]
    whitened = [r for r in section.runs if r.whitening and not r.variant]
    if whitened:
        lines += [
            "",
            "Whitening of each -white row (learned on images not evaluated; its query-side rows use the same):",
        ]
        lines += [""] + [f"- {r.model} {r.descriptor}: {r.whitening}, {r.whitening_source}" for r in whitened]
    if plot_name:
        lines += ["", f"![P@10 and MAP@R per descriptor]({plot_name})"]
    return "\n".join(lines) + "\n"


def to_plain(section: DescriptorSection) -> Dict:
    def interval(i: Interval) -> Dict:
        return {"mean": i.mean, "low": i.low, "high": i.high, "n": i.n, "level": i.level}

    return {
        "dataset": section.dataset,
        "split": section.split,
        "protocol": section.protocol,
        "descriptors": section.descriptors,
        "models": section.models,
        "runs": [
            {
                "model": r.model,
                "descriptor": r.descriptor,
                "variant": r.variant,
                "row": r.row_label,
                "collection": r.collection,
                "n_queries": r.n_queries,
                "whitening": r.whitening,
                "whitening_source": r.whitening_source,
                "whitening_given": r.whitening_given,
                "metrics": {m: interval(i) for m, i in r.metrics.items()},
            }
            for r in section.runs
        ],
        "differences": [
            {"descriptor": p.descriptor, "a": p.a, "b": p.b, "metric": p.metric, "difference": interval(p.difference)}
            for p in section.differences
        ],
        "order_sentences": section.order_sentences,
        "best_sentences": section.best_sentences,
    }


def write_plot(section: DescriptorSection, path: Path) -> None:
    """Each model's P@10 and MAP@R (with intervals) across the descriptors, one panel per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from indexer.evaluation.colours import model_colours

    colours = model_colours(section.models)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    x = np.arange(len(section.descriptors))
    width = 0.8 / max(1, len(section.models))
    for ax, metric in zip(axes, ("P@10", "MAP@R")):
        for j, model in enumerate(section.models):
            runs = [_find(section.runs, model, label) for label in section.descriptors]
            xs = [x[i] + (j - (len(section.models) - 1) / 2) * width for i, r in enumerate(runs) if r is not None]
            present = [r for r in runs if r is not None]
            means = [r.metrics[metric].mean for r in present]
            err = [
                [r.metrics[metric].mean - r.metrics[metric].low for r in present],
                [r.metrics[metric].high - r.metrics[metric].mean for r in present],
            ]
            ax.errorbar(xs, means, yerr=err, fmt="o", color=colours[model], label=model, capsize=3)
        ax.set_xticks(x)
        ax.set_xticklabels(section.descriptors, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} per descriptor, {section.dataset}/{section.split}")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(section: DescriptorSection, folder: Path) -> Path:
    """``descriptors.md``, ``descriptors.json`` and ``descriptors.png`` in ``folder``; returns the Markdown file."""
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_plot(section, folder / "descriptors.png")
    (folder / "descriptors.json").write_text(json.dumps(to_plain(section), indent=1))
    md = folder / "descriptors.md"
    md.write_text(to_markdown(section, "descriptors.png"))
    return md
