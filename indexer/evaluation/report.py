"""``evaluate --report DIR``: which backbone retrieves better, how sure we are, and in pictures.

Writes DIR/report.json (every figure), DIR/report.md (tables, sentences, links to the PNGs beside it)
and DIR/report.html (the same, self-contained: PNGs embedded as base64, no external assets).
All figures come from the per-query values of one evaluation pass (``evaluate_runs``).
"""
from __future__ import annotations

import base64
import html
import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from embed.common.settings import DEFAULT_EMBEDDINGS
from indexer.evaluation.evaluate import EvaluationError, Run, write_plot
from indexer.evaluation.sections import TOP_OVERLAP, agreement_table, ci_text
from indexer.evaluation.stats import (CONFIDENCE, CONFIDENCE_LABEL, DEFAULT_RESAMPLES, Interval, bootstrap_ci,
                                      bootstrap_means, compare_sentence, mcnemar_exact, paired_difference,
                                      percentile_interval)

log = logging.getLogger(__name__)

PAIR_METRICS = (("P@1", "precision", "1"), ("P@10", "precision", "10"), ("MAP@R", "ap_at_r", None))
GALLERY_TOP = 5


@dataclass
class ReportConfig:
    out: Path
    data_root: Optional[Path] = None          # to read images for the style measure and the galleries
    split: str = "val"
    embeddings: Path = Path(DEFAULT_EMBEDDINGS)   # where `embed check` leaves check.json files
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


def intervals(run: Run, resamples: int, seed: int) -> Dict[str, Dict]:
    """Every metric of a run with its percentile-bootstrap interval at CONFIDENCE (retrieval metrics share their
    resamples; each column's interval is the one ``bootstrap_ci`` gives it alone)."""
    cols = metric_columns(run)
    names = list(cols)
    matrix = np.stack([cols[n] for n in names], 1)
    out = {}
    if len(matrix):
        low, high = percentile_interval(bootstrap_means(matrix, resamples, seed), CONFIDENCE)
        for j, n in enumerate(names):
            out[n] = Interval(float(matrix[:, j].mean()), float(low[j]), float(high[j]), len(matrix)).to_dict()
    out["kNN@20"] = bootstrap_ci(run.per_query.knn_correct.astype(float), resamples, seed).to_dict()
    if run.dino_correct is not None:
        out["DINO kNN top-1"] = bootstrap_ci(run.dino_correct.astype(float), resamples, seed).to_dict()
    return out


def _pair_values(run: Run, key: str, k: Optional[str]) -> np.ndarray:
    return getattr(run.per_query, key)[k] if k else getattr(run.per_query, key)


def check_aligned(runs: Sequence[Run]) -> None:
    first = runs[0]
    for r in runs[1:]:
        if not np.array_equal(r.ids, first.ids) or list(r.class_ids) != list(first.class_ids):
            raise EvaluationError(f"{r.model} and {first.model} were not built from the same images: paired comparisons "
                             f"need the same dataset and split (rebuild both from the same --data-root)")


# the eight parts -------------------------------------------------------------------------------

def pairs(runs: Sequence[Run], resamples: int, seed: int) -> List[Dict]:
    out = []
    for a, b in itertools.combinations(runs, 2):
        entry = {"a": a.model, "b": b.model, "metrics": {}, "sentences": []}
        for label, key, k in PAIR_METRICS:
            diff = paired_difference(_pair_values(a, key, k), _pair_values(b, key, k), resamples, seed)
            p = None
            if label == "P@1":
                test = mcnemar_exact(a.per_query.hit["1"], b.per_query.hit["1"])
                p = test.p_value
                entry["mcnemar_p_at_1"] = test.to_dict()
            entry["metrics"][label] = {**diff.to_dict(), "p_value": p}
            entry["sentences"].append(compare_sentence(a.model, b.model, label, diff, p))
        out.append(entry)
    return out


def per_class(runs: Sequence[Run], shown: int) -> Dict:
    """Per-class P@10 of every model, and the classes where each model gains or loses most against the others."""
    from embed.sources.datasets import class_name
    labels = runs[0].labels[runs[0].per_query.valid]
    classes = np.unique(labels)
    names = np.asarray(runs[0].class_ids, dtype=object)[runs[0].per_query.valid]
    counts = np.bincount(labels, minlength=labels.max() + 1)[classes]
    table = {}
    for r in runs:
        sums = np.bincount(labels, weights=r.per_query.precision["10"], minlength=labels.max() + 1)[classes]
        table[r.model] = sums / counts
    class_ids = [str(names[np.flatnonzero(labels == c)[0]]) for c in classes]
    movers = {}
    for r in runs:
        others = [table[o.model] for o in runs if o.model != r.model]
        gain = table[r.model] - np.mean(others, axis=0)
        order = np.argsort(gain, kind="stable")
        row = lambda j: {"class_id": class_ids[j], "class_name": class_name(class_ids[j]), "gain": float(gain[j]),
                         **{m: float(table[m][j]) for m in table}}
        movers[r.model] = {"gains": [row(j) for j in order[::-1][:shown]], "losses": [row(j) for j in order[:shown]]}
    return {"class_ids": class_ids, "p_at_10": {m: v.tolist() for m, v in table.items()}, "movers": movers}


def agreement(runs: Sequence[Run]) -> List[Dict]:
    out = []
    for a, b in itertools.combinations(runs, 2):
        ta, tb = a.neighbours.index[:, :TOP_OVERLAP], b.neighbours.index[:, :TOP_OVERLAP]
        overlap = (ta[:, :, None] == tb[:, None, :]).any(-1).sum(1) / ta.shape[1]
        test = mcnemar_exact(a.per_query.hit["1"], b.per_query.hit["1"])
        n = test.both + test.only_a + test.only_b + test.neither
        out.append({"a": a.model, "b": b.model, f"top{TOP_OVERLAP}_overlap": float(overlap.mean()),
                    "p_at_1": {"both_right": test.both / n, f"only_{a.model}": test.only_a / n,
                               f"only_{b.model}": test.only_b / n, "neither": test.neither / n, "queries": n}})
    return out


def style(runs: Sequence[Run], cfg: ReportConfig) -> Optional[Dict]:
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
    measures = {"colour": colour_similarity, "structure": structure_similarity}

    def score(q: int, others: Sequence[int]) -> Dict[str, float]:
        return {m: float(np.mean([f(cache[q], cache[o]) for o in others])) if len(others) else np.nan
                for m, f in measures.items()}

    per_query = {}
    baseline_rows = []
    for q in sample:
        same = np.flatnonzero(labels == labels[q])
        baseline_rows.append(int(rng.choice(same[same != q])))
    per_query["random same-class pair"] = [score(q, [o]) for q, o in zip(sample, baseline_rows)]
    for r in runs:
        per_query[r.model] = [score(q, [o for o in r.neighbours.index[q, :10] if labels[o] == labels[q]])
                              for q in sample]
    out = {"queries": int(len(sample)), "neighbours": "same-class images among each model's top 10",
           "baseline": "one random other image of the query's class", "measures": {}, "sentences": []}
    for m in measures:
        values = {name: np.array([d[m] for d in rows]) for name, rows in per_query.items()}
        base = values["random same-class pair"]
        entry = {"random same-class pair": bootstrap_ci(base, cfg.resamples, cfg.seed).to_dict()}
        for r in runs:
            v = values[r.model]
            has = ~np.isnan(v)
            entry[r.model] = bootstrap_ci(v[has], cfg.resamples, cfg.seed).to_dict()
            diff = paired_difference(v[has], base[has], cfg.resamples, cfg.seed)
            entry[f"{r.model} - baseline"] = diff.to_dict()
            out["sentences"].append(_style_sentence(r.model, m, entry[r.model], diff))
        for a, b in itertools.combinations(runs, 2):
            va, vb = values[a.model], values[b.model]
            both = ~np.isnan(va) & ~np.isnan(vb)
            diff = paired_difference(va[both], vb[both], cfg.resamples, cfg.seed)
            entry[f"{a.model} - {b.model}"] = diff.to_dict()
            out["sentences"].append(compare_sentence(a.model, b.model, f"{m} similarity of same-class neighbours",
                                                     diff, better="finds neighbours closer in appearance than"))
        out["measures"][m] = entry
    out["sentences"].append(
        "What this supports: the figures measure low-level appearance only (colour distribution in CIELAB, "
        "structure of 32x32 greyscale thumbnails) between a query and its retrieved images of the same class. A model "
        "'picks stylistically closer images' in this sense only where its figure is above the random same-class "
        "baseline and, against another model, where the paired difference above excludes zero.")
    return out


def _style_sentence(model: str, measure: str, value: Dict, diff: Interval) -> str:
    ci = f"{CONFIDENCE_LABEL} CI {diff.low:+.3f} to {diff.high:+.3f}"
    if not diff.excludes_zero():
        return (f"{model}'s same-class neighbours are no closer in {measure} to the query than random same-class "
                f"images (mean {value['mean']:.3f}; difference {diff.mean:+.3f}, {ci}).")
    word = "closer" if diff.mean > 0 else "less close"
    return (f"{model}'s same-class neighbours are {word} in {measure} to the query than random same-class images "
            f"(mean {value['mean']:.3f}; difference {diff.mean:+.3f}, {ci}).")


def read_check(embeddings: Path, model: str, dataset: str, split: str) -> Optional[Dict]:
    """The ``python -m embed check`` result for a model, where one was saved (check.json beside the manifest)."""
    from embed.models.accuracy_check import check_path
    path = check_path(Path(embeddings), model, dataset, split)
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
    return {**data, "path": str(path)}


def accuracy(runs: Sequence[Run], cfg: ReportConfig, dataset: str) -> Dict:
    rows = {r.model: read_check(cfg.embeddings, r.model, dataset, cfg.split) for r in runs}
    found = {m: c for m, c in rows.items() if c}
    out = {"checks": rows, "sentences": []}
    if len(found) >= 2:
        by_acc = sorted(found, key=lambda m: -found[m]["top1"])
        p10 = {r.model: float(r.per_query.precision["10"].mean()) for r in runs if r.model in found}
        by_ret = sorted(found, key=lambda m: -p10[m])
        same = "the same order" if by_acc == by_ret else "a different order"
        out["sentences"].append(f"Classifier top-1 ranks {' > '.join(by_acc)}; retrieval P@10 ranks "
                                f"{' > '.join(by_ret)}: {same}.")
    missing = [m for m, c in rows.items() if not c]
    if missing:
        out["sentences"].append(f"No classifier accuracy for {', '.join(missing)}: run `python -m embed check --model "
                                f"MODEL --split {cfg.split}` to add it.")
    return out


def disagreement_queries(runs: Sequence[Run], n: int) -> List[int]:
    """Rows where the models' P@10 spread most (then where P@1 differs), ties by row."""
    valid = np.flatnonzero(runs[0].per_query.valid)
    p10 = np.stack([r.per_query.precision["10"] for r in runs])
    p1 = np.stack([r.per_query.hit["1"] for r in runs])
    spread = p10.max(0) - p10.min(0) + 0.01 * (p1.max(0) != p1.min(0))
    order = np.lexsort((valid, -spread))
    return [int(valid[j]) for j in order[:n]]


def gallery(runs: Sequence[Run], row: int, folder: Path, path: Path) -> Dict:
    """A grid: one line per model, the query then its top 5 with hit (green) / miss (red) borders."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from embed.sources.datasets import class_name
    from embed.sources.imaging import load_rgb
    first = runs[0]
    fig, axes = plt.subplots(len(runs), GALLERY_TOP + 1, figsize=(1.6 * (GALLERY_TOP + 1), 1.75 * len(runs)),
                             dpi=72, squeeze=False)
    entry = {"query_row": row, "query_id": int(first.ids[row]), "relpath": first.relpaths[row],
             "class_id": first.class_ids[row], "models": {}}
    for i, r in enumerate(runs):
        top = r.neighbours.index[row, :GALLERY_TOP]
        hits = [bool(r.labels[j] == r.labels[row]) for j in top]
        entry["models"][r.model] = {"ids": [int(r.ids[j]) for j in top], "hits": hits,
                                    "p_at_10": float(r.per_query.precision["10"][np.flatnonzero(r.per_query.valid) == row][0])}
        for j, (ax, img_row) in enumerate(zip(axes[i], [row] + list(top))):
            ax.imshow(load_rgb(folder / first.relpaths[img_row]))
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(r.model, fontsize=8)
                ax.set_title(f"query\n{class_name(first.class_ids[row])[:16]}", fontsize=7)
                continue
            colour = "#1a9641" if hits[j - 1] else "#d7191c"
            for side in ax.spines.values():
                side.set_edgecolor(colour)
                side.set_linewidth(4)
            ax.set_title(("hit" if hits[j - 1] else "miss") + f"\n{class_name(first.class_ids[img_row])[:16]}",
                         fontsize=7, color=colour)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    entry["png"] = path.name
    return entry


# plots -----------------------------------------------------------------------------------------

def ci_plot(cis: Dict[str, Dict], path: Path, metrics=("P@1", "P@10", "R-precision", "MAP@R", "kNN@20")) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = list(cis)
    fig, ax = plt.subplots(figsize=(7.5, 4), dpi=110)
    width = 0.8 / max(1, len(models))
    for i, m in enumerate(models):
        shown = [k for k in metrics if k in cis[m]]
        x = np.arange(len(shown)) + i * width
        mean = np.array([cis[m][k]["mean"] for k in shown])
        err = np.array([[mean[j] - cis[m][k]["low"], cis[m][k]["high"] - mean[j]] for j, k in enumerate(shown)]).T
        ax.bar(x, mean, width, yerr=err, capsize=3, label=m)
    ax.set_xticks(np.arange(len(shown)) + width * (len(models) - 1) / 2)
    ax.set_xticklabels(shown)
    ax.set_ylabel(f"value ({CONFIDENCE_LABEL} bootstrap CI)")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def class_scatter(classes: Dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = list(classes["p_at_10"])
    combos = list(itertools.combinations(models, 2))
    fig, axes = plt.subplots(1, len(combos), figsize=(4.2 * len(combos), 4), dpi=100, squeeze=False)
    for ax, (a, b) in zip(axes[0], combos):
        xa, xb = np.array(classes["p_at_10"][a]), np.array(classes["p_at_10"][b])
        ax.scatter(xa, xb, s=10, alpha=0.6)
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
        ax.set_xlabel(f"{a}: per-class P@10")
        ax.set_ylabel(f"{b}: per-class P@10")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# the document ----------------------------------------------------------------------------------

class Document:
    """Blocks rendered twice: Markdown (PNG links) and self-contained HTML (PNGs inline)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.blocks: List[Tuple] = []

    def h(self, text: str, level: int = 2):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def paragraphs(self, texts: Sequence[str]):
        for text in texts:
            self.p(text)

    def table(self, head: Sequence[str], rows: Sequence[Sequence]):
        self.blocks.append(("table", list(head), [[str(c) for c in r] for r in rows]))

    def image(self, name: str, caption: str):
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
        out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
               "body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
               "table{border-collapse:collapse;margin:1em 0;font-size:90%}td,th{border:1px solid #ccc;padding:3px 7px}"
               "th{background:#f2f2f2}img{max-width:100%}figcaption{color:#555;font-size:90%}</style></head><body>"]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{e(b[1])}</p>")
            elif b[0] == "table":
                out.append("<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in b[1]) + "</tr>" +
                           "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in b[2]) + "</table>")
            else:
                data = base64.b64encode((self.folder / b[1]).read_bytes()).decode()
                out.append(f"<figure><img alt='{e(b[2])}' src='data:image/png;base64,{data}'>"
                           f"<figcaption>{e(b[2])}</figcaption></figure>")
        out.append("</body></html>")
        return "\n".join(out)


def build_report(evaluation: Dict, runs: Sequence[Run], cfg: ReportConfig) -> Dict:
    """Compute all eight parts and write DIR/report.{json,md,html}; returns the JSON document."""
    out = Path(cfg.out)
    (out / "galleries").mkdir(parents=True, exist_ok=True)
    proto = evaluation["protocol"]
    variant = runs[0].features
    primary = [r for r in runs if r.features == variant]
    check_aligned(primary)
    log.info("report: confidence intervals (%d resamples)", cfg.resamples)
    cis = {f"{r.model} ({r.features})": intervals(r, cfg.resamples, cfg.seed) for r in runs}
    doc = {"protocol": proto, "variant_compared": variant, "bootstrap": {"resamples": cfg.resamples, "seed": cfg.seed,
           "confidence": CONFIDENCE, "method": f"percentile bootstrap over queries, {CONFIDENCE_LABEL}"},
           "results": evaluation["results"],
           "confidence_intervals": cis}
    doc["pairs"] = pairs(primary, cfg.resamples, cfg.seed) if len(primary) > 1 else []
    doc["per_class"] = per_class(primary, cfg.classes_shown) if len(primary) > 1 else None
    doc["agreement"] = agreement(primary) if len(primary) > 1 else []
    log.info("report: appearance similarity on %d queries", cfg.style_queries)
    doc["style"] = style(primary, cfg)
    doc["dino_knn"] = {r.model: {**cis[f"{r.model} ({r.features})"]["DINO kNN top-1"],
                                 "protocol": next(x["extra"]["dino_knn"]["protocol"] for x in evaluation["results"]
                                                  if x["model"] == r.model)}
                       for r in primary if r.dino_correct is not None}
    doc["accuracy"] = accuracy(primary, cfg, proto["dataset"])
    doc["galleries"] = []
    if cfg.data_root is not None and len(primary) > 1:
        folder = Path(cfg.data_root) / cfg.split
        for row in disagreement_queries(primary, cfg.galleries):
            doc["galleries"].append(gallery(primary, row, folder, out / "galleries" / f"query_{int(primary[0].ids[row])}.png"))
    figures = {"precision_at_k": "precision_at_k.png", "confidence_intervals": "confidence_intervals.png"}
    write_plot(evaluation, out / figures["precision_at_k"])
    ci_plot({r.model: cis[f"{r.model} ({r.features})"] for r in primary}, out / figures["confidence_intervals"])
    if doc["per_class"]:
        figures["per_class"] = "per_class_p_at_10.png"
        class_scatter(doc["per_class"], out / figures["per_class"])
    doc["figures"] = figures
    doc["sentences"] = [s for p in doc["pairs"] for s in p["sentences"]]
    (out / "report.json").write_text(json.dumps(doc, indent=1, default=_json_default))
    page = render(doc, out)
    (out / "report.md").write_text(page.markdown())
    (out / "report.html").write_text(page.html(f"Retrieval report: {proto['dataset']}/{proto['split']}"))
    return doc


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def render(doc: Dict, folder: Path) -> Document:
    proto = doc["protocol"]
    d = Document(folder)
    d.h(f"Retrieval report: {proto['dataset']}/{proto['split']}", 1)
    d.p(f"Protocol: {proto['name']}; {proto['distance']}; {proto['excluded']}. Confidence intervals: "
        f"{doc['bootstrap']['method']}, {doc['bootstrap']['resamples']} resamples, seed {doc['bootstrap']['seed']}. "
        f"Comparisons use the {doc['variant_compared']} features.")
    randoms = sorted({r["model"] for r in doc["results"] if r["random_weights"]})
    if randoms:
        d.p(f"Warning: {', '.join(randoms)} use RANDOM weights; their figures measure nothing but chance.")

    d.h(f"1. Every metric with its {CONFIDENCE_LABEL} confidence interval")
    names = ["P@1", "P@10", "R@10", "R-precision", "MAP@R", "kNN@20"]
    d.table(["model (features)", "n"] + names,
            [[m, v["P@1"]["n"]] + [ci_text(v[n]) if n in v else "" for n in names] for m, v in doc["confidence_intervals"].items()])
    d.image(doc["figures"]["confidence_intervals"], f"Means with {CONFIDENCE_LABEL} bootstrap intervals")
    d.image(doc["figures"]["precision_at_k"], "precision@k against k")

    d.h("2. Paired differences")
    if doc["pairs"]:
        rows = []
        for p in doc["pairs"]:
            for label, m in p["metrics"].items():
                pv = "" if m["p_value"] is None else f"{m['p_value']:.3g} (exact McNemar)"
                rows.append([f"{p['a']} − {p['b']}", label, f"{m['mean']:+.4f}", f"[{m['low']:+.4f}, {m['high']:+.4f}]", pv])
        d.table(["pair", "metric", "difference", f"{CONFIDENCE_LABEL} CI (paired bootstrap)", "p"], rows)
        d.paragraphs(doc["sentences"])
    else:
        d.p("One model only: nothing to pair.")

    d.h("3. Per class")
    if doc["per_class"]:
        for model, mv in doc["per_class"]["movers"].items():
            others = [m for m in doc["per_class"]["p_at_10"] if m != model]
            rows = [[kind, f"{c['class_name']} ({c['class_id']})", f"{c['gain']:+.3f}"] + [f"{c[m]:.3f}" for m in [model] + others]
                    for kind, items in (("most ahead", mv["gains"]), ("least ahead", mv["losses"])) for c in items]
            d.p(f"{model}: classes where its P@10 is furthest above / below the other models' mean.")
            d.table(["", "class", f"{model} − others"] + [f"P@10 {m}" for m in [model] + others], rows)
        d.image(doc["figures"]["per_class"], "Per-class P@10, one point per class (dashed: equal)")

    d.h("4. Agreement")
    if doc["agreement"]:
        d.table(*agreement_table(doc["agreement"]))

    d.h("5. Stylistically closer, measured")
    st = doc["style"]
    if st:
        d.p(f"{st['queries']} sampled queries; neighbours: {st['neighbours']}; baseline: {st['baseline']}. "
            "colour = CIELAB histogram intersection, structure = SSIM of 32x32 greyscale thumbnails.")
        for measure, entry in st["measures"].items():
            d.table(["", f"{measure} similarity to the query ({CONFIDENCE_LABEL} CI)"],
                    [[name, ci_text(v)] for name, v in entry.items() if " - " not in name])
        d.paragraphs(st["sentences"])
    else:
        d.p("Not measured: pass --data-root so that the images can be read.")

    d.h("6. DINO-style kNN (weighted vote of the 20 nearest, T = 0.07, unit-normalised features)")
    if doc["dino_knn"]:
        d.table(["model", f"top-1 ({CONFIDENCE_LABEL} CI)", "protocol"], [[m, ci_text(v), v["protocol"]] for m, v in doc["dino_knn"].items()])
    else:
        d.p("Not run: pass --holdout 0.2, or --database-split and --query-split.")

    d.h("7. Classifier accuracy beside retrieval")
    acc = doc["accuracy"]
    rows = [[m, f"{c['top1']:.4f}", f"{c['top5']:.4f}", c["n"], c.get("weights_source", "")]
            for m, c in acc["checks"].items() if c]
    if rows:
        d.table(["model", "top-1", "top-5", "images", "weights"], rows)
    d.paragraphs(acc["sentences"])

    d.h("8. Where the models disagree most")
    for g in doc["galleries"]:
        marks = "; ".join(f"{m}: P@10 {v['p_at_10']:.1f}" for m, v in g["models"].items())
        d.image(f"galleries/{g['png']}", f"query id {g['query_id']} ({g['relpath']}, {g['class_id']}): {marks}")
    if not doc["galleries"]:
        d.p("No galleries: they need two or more models and --data-root.")
    return d
