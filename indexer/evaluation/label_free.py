"""Which backbone suits a set of images that has no labels (or as well as the labelled measures): label-free
measures, each a mean over images with its percentile-bootstrap interval and paired comparisons, as the
labelled report computes them (indexer.evaluation.stats).

* copy retrieval and stability under the robustness transforms (indexer.evaluation.robustness, labels off): is
  the original found among all images when a query is cropped, compressed, blurred ...; how much of its
  neighbour list survives;
* agreement between models: the overlap of two models' top-10 lists of the same image, and each model's
  consensus (its mean overlap with the others), with galleries of the images on which they disagree most;
* near-duplicate groups: pairs of images whose unit-length vectors lie within ``duplicate_distance`` (squared
  L2, = 2 - 2 cos), grouped transitively, per model, with galleries;
* map trustworthiness: how many of each image's 10 neighbours on the model's 2-D map (indexer.evaluation.maps,
  cached for the app's Maps page) are its neighbours in the original space, per image (its mean is
  scikit-learn's trustworthiness).
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from embed.common.settings import DEFAULTS
from embed.common.vectors import l2_normalize
from indexer.evaluation.document import CONFIDENCE, Interval, McNemar, level_text, to_plain
from indexer.evaluation.stats import DEFAULT_RESAMPLES, bootstrap_ci, compare_sentence, mcnemar_exact, paired_difference
from indexer.milvus_store import StoreError

log = logging.getLogger(__name__)

TOP_K = 10
GALLERY_TOP = 5
THUMB = 96
COPY_FAMILIES = ("zoom", "jpeg", "blur", "colour")
LABEL_FREE_FILES = ("label_free.json", "label_free.md", "label_free.html")
AGREEMENT_BANDS = ((0.0, "models agree on < 30% of the top 10"), (0.3, "30-60%"), (0.6, ">= 60%"))


def agreement_band(value: float) -> str:
    """The colour group of an image's cross-model agreement on the app's unlabelled maps."""
    return [name for low, name in AGREEMENT_BANDS if value >= low][-1]


def read_agreement(folder: Path, dataset: str, split: str) -> Dict[int, float]:
    """{id: agreement} from folder/label_free.json when it is of this data set, else empty."""
    path = Path(folder) / "label_free.json"
    if not path.is_file():
        return {}
    doc = json.loads(path.read_text())
    if doc.get("dataset") != dataset or doc.get("split") != split:
        return {}
    return {int(k): float(v) for k, v in doc.get("agreement", {}).items()}


@dataclass
class LabelFreeConfig:
    models: Sequence[str]
    split: str
    dataset: Optional[str] = None
    data_root: Optional[Path] = None  # the folder holding the split's images (default: the collection's)
    out: Optional[Path] = None  # DIR/label_free.{json,md,html}; None: figures only
    embeddings: Path = Path(DEFAULTS.embeddings)
    copy_queries: int = 200  # 0: no copy retrieval (it embeds transformed queries: minutes on a CPU)
    families: Sequence[str] = COPY_FAMILIES
    severities: int = 2
    duplicate_distance: float = 0.05
    map_method: str = "pca"
    map_points: int = 2000
    resamples: int = DEFAULT_RESAMPLES
    seed: int = 0
    galleries: int = 6
    device: str = "auto"
    batch_size: int = 32
    progress: bool = True
    labels: str = ""  # how the images are labelled, in words, for the report's first lines


@dataclass
class ModelMeasure:
    model: str
    measure: str
    value: Interval


@dataclass
class PairTest:
    """Model a minus model b on one per-image measure, over the same images."""

    a: str
    b: str
    measure: str
    difference: Interval
    mcnemar: Optional[McNemar]
    sentence: str


@dataclass
class Overlap:
    a: str
    b: str
    value: Interval  # mean share of the top-10 lists the two models have in common


@dataclass
class DuplicateGroups:
    model: str
    pairs: int
    groups: List[List[str]]  # relpaths, largest groups first
    with_duplicate: Interval  # share of images that have a near-duplicate


@dataclass
class LabelFreeResult:
    dataset: str
    split: str
    models: List[str]
    images: int
    labels: str
    measures_note: str
    duplicate_distance: float
    map_method: str
    measures: List[ModelMeasure]
    pairs: List[PairTest]
    overlaps: List[Overlap]
    duplicates: List[DuplicateGroups]
    galleries: List[Dict[str, str]]  # {"png", "caption"}
    sentences: List[str]
    robustness: Optional[Dict] = None
    # each image's mean top-10 overlap across the models, by id: what the app's unlabelled maps are coloured by
    agreement: Dict[int, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(to_plain(self), indent=1)


# measures -----------------------------------------------------------------------------------------------


def top_lists(vectors: np.ndarray, k: int, device: str) -> np.ndarray:
    """(n, k) row indices of each row's k nearest other rows (exact, squared L2)."""
    from indexer.evaluation.exact import ExactSearch

    return ExactSearch(vectors).leave_one_out(k, device=device).index


def overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row: the share of two neighbour lists (n, k) that both hold."""
    return np.asarray([len(set(x) & set(y)) / len(x) for x, y in zip(a.tolist(), b.tolist())], np.float64)


def near_duplicates(unit: np.ndarray, distance: float, chunk: int = 2048) -> List[tuple]:
    """(i, j) with i < j of every pair of unit-length rows within squared L2 ``distance``."""
    pairs = []
    for start in range(0, len(unit), chunk):
        block = 2.0 - 2.0 * (unit[start : start + chunk] @ unit.T)
        rows, cols = np.nonzero(block <= distance)
        for r, c in zip(rows.tolist(), cols.tolist()):
            i = r + start
            if i < c:
                pairs.append((i, c))
    return pairs


def groups_of(n: int, pairs: Sequence[tuple]) -> List[List[int]]:
    """Connected components of the pairs (a near-duplicate of a near-duplicate is in the group), largest first."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        parent[root(i)] = root(j)
    members: Dict[int, List[int]] = {}
    for i in sorted({i for p in pairs for i in p}):
        members.setdefault(root(i), []).append(i)
    return sorted(members.values(), key=lambda g: (-len(g), g[0]))


def trustworthiness_per_point(x: np.ndarray, coords: np.ndarray, k: int) -> np.ndarray:
    """Each point's share of scikit-learn's trustworthiness (their mean is ``sklearn.manifold.trustworthiness``):
    1 - 2 / (k (2n - 3k - 1)) * sum over its k nearest points on the map of how far beyond rank k they are in
    the original space."""
    n = len(x)
    x = np.asarray(x, np.float64)
    c = np.asarray(coords, np.float64)
    dx = _sq_distances(x)
    np.fill_diagonal(dx, np.inf)
    order = np.argsort(dx, axis=1, kind="stable")
    ranks = np.empty_like(order)
    ranks[np.arange(n)[:, None], order] = np.arange(1, n + 1)[None, :]
    dc = _sq_distances(c)
    np.fill_diagonal(dc, np.inf)
    near = np.argsort(dc, axis=1, kind="stable")[:, :k]
    penalty = np.maximum(ranks[np.arange(n)[:, None], near] - k, 0).sum(1)
    return 1.0 - 2.0 / (k * (2.0 * n - 3.0 * k - 1.0)) * penalty


def _sq_distances(x: np.ndarray) -> np.ndarray:
    sq = (x * x).sum(1)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)


def paired_tests(
    values: Dict[str, np.ndarray], measure: str, resamples: int, seed: int, binary: bool = False, better: str = ""
) -> List[PairTest]:
    out = []
    for a, b in itertools.combinations(values, 2):
        diff = paired_difference(values[a], values[b], resamples, seed)
        mc = mcnemar_exact(values[a] > 0, values[b] > 0) if binary else None
        sentence = compare_sentence(a, b, measure, diff, mc.p_value if mc else None, better or "scores higher than")
        out.append(PairTest(a, b, measure, diff, mc, sentence))
    return out


# the whole comparison ------------------------------------------------------------------------------------


def collection_class_ids(store, name: str) -> List[str]:
    """The class ids of a collection's rows, read without their vectors."""
    return [row["class_id"] for batch in store.iter_rows(name, with_vectors=False) for row in batch]


def aligned_collections(store, cfg: LabelFreeConfig):
    """(collections, ids, {model: vectors}, relpaths) on the images every model holds, in id order."""
    from indexer.catalog import find_collection

    colls = [find_collection(store, m, cfg.split, cfg.dataset) for m in cfg.models]
    if len({c.meta.dataset for c in colls}) > 1:
        raise StoreError("the models are indexed for different datasets: pass --images DIR or --data-root")
    read = {c.meta.model: store.read_all(c.name, progress=cfg.progress) for c in colls}
    common = None
    for ids, *_ in read.values():
        common = set(ids.tolist()) if common is None else common & set(ids.tolist())
    keep_ids = np.asarray(sorted(common or ()), np.int64)
    vectors, relpaths = {}, []
    for model, (ids, vecs, _classes, paths) in read.items():
        rows = np.searchsorted(ids, keep_ids)
        vectors[model] = vecs[rows]
        relpaths = [paths[i] for i in rows]
    return colls, keep_ids, vectors, relpaths


def evaluate_label_free(store, cfg: LabelFreeConfig) -> LabelFreeResult:
    from embed.extraction.embedder import resolve_device
    from indexer.evaluation.maps import MapParams, compute_map

    colls, ids, vectors, relpaths = aligned_collections(store, cfg)
    models = list(vectors)
    n = len(ids)
    if n < 3:
        raise StoreError(f"label-free measures need at least 3 images the models share, got {n}")
    device = str(resolve_device(cfg.device))
    root = Path(cfg.data_root) if cfg.data_root else Path(colls[0].meta.data_root)
    folder = root / cfg.split
    k = min(TOP_K, n - 1)
    measures: List[ModelMeasure] = []
    tests: List[PairTest] = []
    sentences: List[str] = []
    galleries: List[Dict[str, str]] = []
    out = Path(cfg.out) if cfg.out else None
    if out:
        (out / "galleries").mkdir(parents=True, exist_ok=True)

    # agreement between models
    tops = {m: top_lists(vectors[m], k, device) for m in models}
    overlaps: List[Overlap] = []
    per_pair: Dict[tuple, np.ndarray] = {}
    for a, b in itertools.combinations(models, 2):
        per_pair[(a, b)] = overlap(tops[a], tops[b])
        overlaps.append(Overlap(a, b, bootstrap_ci(per_pair[(a, b)], cfg.resamples, cfg.seed)))
    if len(models) > 2:  # with two models each one's consensus is their one overlap
        consensus = {
            m: np.mean([v for (a, b), v in per_pair.items() if m in (a, b)], axis=0) for m in models
        }  # each model's mean overlap with the others, per image
        measures += [
            ModelMeasure(m, f"consensus top-{k} overlap", bootstrap_ci(v, cfg.resamples, cfg.seed))
            for m, v in consensus.items()
        ]
        tests += paired_tests(
            consensus,
            f"consensus top-{k} overlap",
            cfg.resamples,
            cfg.seed,
            better="agrees more with the other models than",
        )
    agreement_per_image = np.mean(list(per_pair.values()), axis=0) if per_pair else np.zeros(n)
    if len(models) > 1:
        mean_overlap = agreement_per_image
        worst = np.argsort(mean_overlap, kind="stable")[: cfg.galleries]
        if out:
            for row in worst:
                png = f"galleries/disagree_{int(ids[row])}.png"
                draw_gallery(
                    folder,
                    relpaths[row],
                    [(m, [relpaths[j] for j in tops[m][row][:GALLERY_TOP]]) for m in models],
                    out / png,
                )
                galleries.append(
                    {
                        "png": png,
                        "caption": f"{relpaths[row]}: the models' top-{k} lists share {mean_overlap[row]:.0%} on "
                        f"average (query, then each model's top {GALLERY_TOP})",
                    }
                )

    # near-duplicates
    duplicates: List[DuplicateGroups] = []
    has_dup: Dict[str, np.ndarray] = {}
    for m in models:
        pairs = near_duplicates(l2_normalize(vectors[m]), cfg.duplicate_distance)
        groups = groups_of(n, pairs)
        flag = np.zeros(n)
        for i, j in pairs:
            flag[i] = flag[j] = 1.0
        has_dup[m] = flag
        duplicates.append(
            DuplicateGroups(
                m,
                len(pairs),
                [[relpaths[i] for i in g] for g in groups],
                bootstrap_ci(flag, cfg.resamples, cfg.seed),
            )
        )
        if out and groups:
            png = f"galleries/duplicates_{_file_part(m)}.png"
            draw_gallery(
                folder,
                None,
                [(f"group {g + 1}", [relpaths[i] for i in grp[:8]]) for g, grp in enumerate(groups[:4])],
                out / png,
            )
            galleries.append(
                {
                    "png": png,
                    "caption": f"{m}: its {min(4, len(groups))} largest near-duplicate groups of {len(groups)} "
                    f"(squared L2 <= {cfg.duplicate_distance:g} between unit-length vectors)",
                }
            )
    if len(models) > 1:
        tests += paired_tests(
            has_dup,
            "share of images with a near-duplicate",
            cfg.resamples,
            cfg.seed,
            binary=True,
            better="finds more near-duplicates than",
        )

    # map trustworthiness
    params = MapParams(method=cfg.map_method, features="raw", seed=cfg.seed)
    trust: Dict[str, np.ndarray] = {}
    maps_dir = out if out else Path(store.settings.report_dir)
    sample = np.sort(np.random.default_rng(cfg.seed).choice(n, min(n, cfg.map_points), replace=False))
    tk = max(1, min(TOP_K, len(sample) // 2 - 1))
    for c in colls:
        result = compute_map(store, c.name, params, maps_dir, progress=cfg.progress)
        position = {int(i): j for j, i in enumerate(np.asarray(result.ids).tolist())}
        rows = [position[int(ids[s])] for s in sample]
        trust[c.meta.model] = trustworthiness_per_point(
            vectors[c.meta.model][sample], np.asarray(result.coords)[rows], tk
        )
        measures.append(
            ModelMeasure(
                c.meta.model, f"map trustworthiness@{tk}", bootstrap_ci(trust[c.meta.model], cfg.resamples, cfg.seed)
            )
        )
    if len(models) > 1:
        tests += paired_tests(
            trust,
            f"map trustworthiness@{tk} ({params.label()})",
            cfg.resamples,
            cfg.seed,
            better="keeps neighbours on its map better than",
        )

    # copy retrieval and stability under transforms
    robustness = None
    if cfg.copy_queries:
        from indexer.evaluation.robustness import RobustnessConfig, evaluate_collections, write_outputs

        rcfg = RobustnessConfig(
            split=cfg.split,
            models=models,
            dataset=colls[0].meta.dataset,
            data_root=root,
            embeddings=cfg.embeddings,
            queries=min(cfg.copy_queries, n),
            families=list(cfg.families),
            severities=cfg.severities,
            seed=cfg.seed,
            resamples=cfg.resamples,
            batch_size=cfg.batch_size,
            device=cfg.device,
            labels=False,
            progress=cfg.progress,
        )
        rresult = evaluate_collections(store, rcfg)
        robustness = write_outputs(rresult, out) if out else to_plain(rresult.to_json())
        sentences += rresult.sentences
    sentences = [t.sentence for t in tests] + sentences
    note = measures_note(bool(robustness), len(models), cfg.labels)
    return LabelFreeResult(
        colls[0].meta.dataset,
        cfg.split,
        models,
        n,
        cfg.labels,
        note,
        cfg.duplicate_distance,
        params.label(),
        measures,
        tests,
        overlaps,
        duplicates,
        galleries,
        sentences,
        robustness,
        {int(i): round(float(v), 4) for i, v in zip(ids, agreement_per_image)} if len(models) > 1 else {},
    )


def measures_note(copy: bool, n_models: int, labels: str) -> str:
    """The one sentence saying which measures were computed and why the others are absent."""
    done = ["near-duplicate groups", "map trustworthiness"]
    absent = []
    if n_models > 1:
        done.insert(0, "agreement between models")
    else:
        absent.append("agreement between models needs two or more models")
    if copy:
        done.insert(0, "copy retrieval and neighbour-list stability under transforms")
    else:
        absent.append("copy retrieval was not asked for (--copy-queries 0)")
    labelled = labels and not labels.startswith("unlabelled") and "evaluated as unlabelled" not in labels
    if labelled:
        done.append("the precision measures (report.html beside this one)")
    else:
        absent.append(f"precision, recall and kNN accuracy need labels ({labels or 'unlabelled'})")
    return f"Computed: {', '.join(done)}; absent: {'; '.join(absent) if absent else 'none'}."


def _file_part(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text)


def draw_gallery(folder: Path, query: Optional[str], rows: Sequence[tuple], path: Path) -> None:
    """A PNG: the query (if any) on the left, then one row of thumbnails per (title, relpaths)."""
    from PIL import Image, ImageDraw

    from embed.sources.imaging import BadImage, load_rgb

    def thumb(rel: str) -> Image.Image:
        try:
            im = load_rgb(folder / rel)
        except BadImage:
            im = Image.new("RGB", (THUMB, THUMB), (200, 200, 200))
        im.thumbnail((THUMB, THUMB))
        return im

    label_w, pad, top = 140, 6, 16
    cols = max((len(r[1]) for r in rows), default=1)
    left = THUMB + pad if query else 0
    width = left + label_w + cols * (THUMB + pad)
    height = max(len(rows) * (THUMB + pad + top), THUMB + top) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if query:
        canvas.paste(thumb(query), (0, top))
        draw.text((0, 0), "query", fill="black")
    for r, (title, rels) in enumerate(rows):
        y = r * (THUMB + pad + top)
        draw.text((left, y + top + THUMB // 2), str(title)[:22], fill="black")
        for c, rel in enumerate(rels):
            x = left + label_w + c * (THUMB + pad)
            canvas.paste(thumb(rel), (x, y + top))
            draw.text((x, y + 2), Path(rel).name[:16], fill="#444")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


# the report ----------------------------------------------------------------------------------------------


def write_label_free(result: LabelFreeResult, folder: Path) -> None:
    """DIR/label_free.json, .md and .html (self-contained), written the one way so that they agree."""
    from indexer.evaluation.report import MarkupDocument

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "label_free.json").write_text(result.to_json())
    d = MarkupDocument(folder)
    title = f"Label-free comparison: {result.dataset}/{result.split}"
    d.h(title, 1)
    d.p(f"Images: {result.images:,} that every model holds; labels: {result.labels or 'unlabelled'}.")
    d.p(result.measures_note)
    d.p(
        f"Every figure is a mean over images with its {level_text(CONFIDENCE)} percentile-bootstrap interval; "
        "differences are paired "
        "(the same images resampled for both models), with an exact McNemar test where the measure is yes/no."
    )
    d.h("Per model")
    by_measure: Dict[str, Dict[str, Interval]] = {}
    for m in result.measures:
        by_measure.setdefault(m.measure, {})[m.model] = m.value
    for dup in result.duplicates:
        by_measure.setdefault("share of images with a near-duplicate", {})[dup.model] = dup.with_duplicate
    d.table(
        ["measure"] + result.models,
        [
            [name] + [_ci(values[m]) if m in values else "" for m in result.models]
            for name, values in by_measure.items()
        ],
    )
    if result.overlaps:
        d.h("Agreement between models (top-10 overlap)")
        d.table(
            ["models", f"mean overlap [{level_text(CONFIDENCE)} CI]"],
            [[f"{o.a} / {o.b}", _ci(o.value)] for o in result.overlaps],
        )
    d.h("Paired comparisons")
    d.paragraphs([t.sentence for t in result.pairs] or ["One model: nothing to compare."])
    d.h(f"Near-duplicate groups (squared L2 <= {result.duplicate_distance:g} between unit-length vectors)")
    d.table(
        ["model", "pairs", "groups", "largest group"],
        [[g.model, g.pairs, len(g.groups), ", ".join(g.groups[0][:4]) if g.groups else ""] for g in result.duplicates],
    )
    d.h("Galleries")
    for g in result.galleries:
        d.image(g["png"], g["caption"])
    if not result.galleries:
        d.p("No galleries: no near-duplicates within the distance and fewer than two models.")
    if result.robustness:
        from indexer.evaluation.robustness_tables import add_robustness_section

        add_robustness_section(d, result.robustness, title="Copy retrieval and stability under transforms")
    (folder / "label_free.md").write_text(d.markdown())
    (folder / "label_free.html").write_text(d.html(title))


def _ci(value: Interval) -> str:
    return f"{value.mean:.3f} [{value.low:.3f}, {value.high:.3f}]"
