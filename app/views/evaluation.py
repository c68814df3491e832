"""Evaluation page: the comparison report's tables and plots, and a browser of the queries where models disagree.

The page reads a report written by ``python -m indexer evaluate ... --report DIR`` (it does not compute one:
a report takes minutes, a page must not). DIR comes from ``--report-dir`` after ``--`` on the streamlit command
line, then env ``RETRIEVAL_REPORT_DIR``, then ``data/report``; the sidebar can change it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `streamlit run` puts app/ on the path, not the repository
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import navigation  # noqa: E402
from app.backend import AppSettings  # noqa: E402
from app.cached import store_for  # noqa: E402
from embed.models.catalog import BLOG_MODELS  # noqa: E402
from indexer.evaluation.document import (  # noqa: E402
    CONFIDENCE,
    ReportDocument,
    ReportSchemaError,
    level_text,
    read_robustness,
)
from indexer.evaluation.sections import sections  # noqa: E402
from indexer.milvus_store import CollectionMeta, StoreError  # noqa: E402


@st.cache_data(show_spinner=False, ttl=30)
def load_report(path: str, mtime: float) -> ReportDocument:
    return ReportDocument.from_json(Path(path).read_text())


def database_collections(settings: AppSettings) -> Dict[str, CollectionMeta]:
    """collection name -> what it holds, for the collections of the app's split in the database."""
    from indexer.catalog import indexed_collections

    try:
        colls = indexed_collections(store_for(settings))
    except StoreError as e:
        st.warning(f"Cannot list the database's collections: {e}")
        return {}
    return {c.name: c.meta for c in colls if c.meta.split == settings.split}


def evaluate_command(split: str, models: List[str], holdout: bool, uri: str, folder: Path, data_root: str = "") -> str:
    """The ``indexer evaluate`` run that (re)writes this page's report for ``models``."""
    return (
        f"python -m indexer evaluate --split {split} --models {','.join(models)}"
        f"{f' --data-root {data_root}' if data_root else ''}{' --holdout 0.2' if holdout else ''} "
        f"--uri {uri} --report {folder}"
    )


def show_sections(doc: ReportDocument, folder: Path) -> None:
    """The report's sections as the report renders them (indexer.evaluation.sections), in Streamlit."""
    for section in sections(doc):
        st.subheader(section.title)
        if section.note:
            st.caption(section.note)
        for table in section.tables:
            if table.caption:
                st.markdown(table.caption)
            st.table(table.records())
        for picture in section.pictures:
            st.image(str(folder / picture.file), caption=picture.caption)
        for sentence in section.sentences:
            st.markdown(f"- {sentence}")


def disagreement_browser(doc: ReportDocument, folder: Path) -> None:
    st.subheader("8. Where the models disagree most")
    galleries = doc.galleries
    if not galleries:
        st.info("This report has no galleries (they need two or more models and --data-root).")
        return
    labels = {
        g.query_id: f"query id {g.query_id} · {g.relpath} · "
        + ", ".join(f"{c.model} P@10 {c.p_at_10:.1f}" for c in g.columns)
        for g in galleries
    }
    chosen = st.selectbox("Query", list(labels), format_func=labels.__getitem__, key="eval_query")
    gallery = next(g for g in galleries if g.query_id == chosen)
    st.image(str(folder / "galleries" / gallery.png), caption="query, then each model's top 5 (green: hit, red: miss)")
    if st.button("Open side by side", key="open_side_by_side"):
        # the Search page reads ?query_id=N and opens that indexed image (its hook for this page)
        navigation.switch_to_search(query_params={"query_id": str(chosen)})


def maps_note(
    settings: AppSettings, folder: Path, collections: Dict[str, CollectionMeta], features: str = "raw"
) -> None:
    """Whether the Maps page has maps of the database's collections (``database_collections``); if not, the command
    that makes them."""
    from indexer.evaluation.maps import available_params, maps_command

    if not collections:
        return
    st.subheader("Maps of the embedding spaces")
    if available_params(folder, collections):
        st.markdown(
            "Each model's space in 2-D, side by side, with its trustworthiness and per-class silhouette: "
            "the **Maps** page (sidebar)."
        )
        return
    st.info(
        f"No maps of these collections in {folder / 'maps'} yet (or they were rebuilt since). The Maps page "
        f"shows them; make them with:"
    )
    st.code(
        maps_command(
            settings.split, sorted(m.model for m in collections.values()), str(folder), settings.uri, features=features
        ),
        language="bash",
        wrap_lines=True,
    )


def show_robustness(settings: AppSettings, folder: Path, models: List[str], robustness: Optional[Dict] = None) -> None:
    """The robustness section: the report's own copy, else what ``python -m indexer robustness --report DIR``
    wrote into a folder that holds no comparison report yet."""
    from indexer.evaluation.robustness_measures import BINARY_MEASURES
    from indexer.evaluation.robustness_tables import TITLES, measure_table, measures_present, pair_table, protocol_text

    try:
        doc = robustness or read_robustness(folder)
    except ReportSchemaError as e:
        st.error(str(e))
        return
    if doc is None:
        st.caption(f"No robustness results in {folder}; this adds them:")
        st.code(
            f"python -m indexer robustness --split {settings.split} --models {','.join(models)} "
            f"--uri {settings.uri} --report {folder}",
            language="bash",
            wrap_lines=True,
        )
        return
    st.header("Robustness: transformed queries")
    st.caption(protocol_text(doc))
    for sentence in doc["sentences"]:
        st.markdown(f"- {sentence}")
    present = measures_present(doc)
    measure = st.selectbox("Measure", present, format_func=TITLES.__getitem__, key="robustness_measure")
    headers, rows = measure_table(doc, measure)
    st.table([dict(zip(headers, row)) for row in rows])
    figure = folder / f"robustness_{measure}.png"
    if figure.is_file():
        st.image(str(figure))
    if len(doc["models"]) > 1 and measure in BINARY_MEASURES:
        headers, rows = pair_table(doc, measure)
        st.table([dict(zip(headers, row)) for row in rows])


def show_ann(settings: AppSettings, folder: Path, models: List[str]) -> None:
    """The approximate-index section ``python -m indexer ann --report DIR`` wrote, or the command that writes it."""
    from indexer.evaluation.ann import ANN_PLOT, build_table, exact_table, point_table, protocol_text, read_ann

    try:
        doc = read_ann(folder)
    except ReportSchemaError as e:
        st.error(str(e))
        return
    if doc is None:
        st.caption(f"No approximate-index measurement in {folder} (it needs a Milvus server); this adds one:")
        st.code(
            f"python -m indexer ann --split {settings.split} --models {','.join(models)} --uri http://HOST:19530 "
            f"--index HNSW --sweep ef=16,32,64,128,256 --report {folder}",
            language="bash",
            wrap_lines=True,
        )
        return
    st.header("Approximate index: does the ranking survive it?")
    st.caption(protocol_text(doc))
    for sentence in doc.sentences:
        st.markdown(f"- {sentence}")
    for headers, rows in (exact_table(doc), point_table(doc), build_table(doc)):
        st.table([dict(zip(headers, row)) for row in rows])
    if (folder / ANN_PLOT).is_file():
        st.image(str(folder / ANN_PLOT))


def show_label_free(folder: Path) -> bool:
    """The label-free comparison in ``folder`` (label_free.json, written by ``indexer evaluate --report``), if any:
    its sentence of what was measured, the per-model table, the paired sentences and the galleries."""
    import json

    path = folder / "label_free.json"
    if not path.is_file():
        return False
    doc = json.loads(path.read_text())
    st.header("Label-free comparison")
    labels = doc.get("labels") or "unlabelled"
    if labels.startswith("unlabelled") or "evaluated as unlabelled" in labels:
        st.info(f"This data set is unlabelled ({labels}): the report has no precision figures.")
    st.markdown(doc["measures_note"])
    rows: Dict[str, Dict[str, str]] = {}
    for m in doc["measures"]:
        v = m["value"]
        rows.setdefault(m["measure"], {"measure": m["measure"]})[m["model"]] = (
            f"{v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}]"
        )
    for d in doc["duplicates"]:
        v = d["with_duplicate"]
        rows.setdefault("share with a near-duplicate", {"measure": "share with a near-duplicate"})[d["model"]] = (
            f"{v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}]"
        )
    st.table(list(rows.values()))
    for o in doc["overlaps"]:
        v = o["value"]
        st.markdown(f"{o['a']} / {o['b']}: top-10 overlap {v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}]")
    for sentence in doc["sentences"]:
        st.markdown(sentence)
    for g in doc["galleries"]:
        png = folder / g["png"]
        if png.is_file():
            st.image(str(png), caption=g["caption"])
    return True


def show_descriptors(folder: Path) -> None:
    """The descriptors section that ``indexer evaluate --report DIR --descriptors ...`` wrote, as written."""
    md = folder / "descriptors.md"
    if not md.is_file():
        st.caption(
            f"No descriptors section in {folder}: `python -m indexer evaluate ... --report {folder} --descriptors "
            f"--eval-classes 100` adds one (each pooling's collection built first, docs/descriptors.md)."
        )
        return
    text = md.read_text()
    st.header("Descriptors: does the order of the models hold under GeM and whitening?")
    st.markdown("\n".join(line for line in text.splitlines() if not line.startswith(("## ", "!["))))
    plot = folder / "descriptors.png"
    if plot.is_file():
        st.image(
            str(plot), caption=f"P@10 and MAP@R of each model across descriptors ({level_text(CONFIDENCE)} intervals)"
        )


def main() -> None:
    st.set_page_config(page_title="Evaluation", layout="wide")
    settings = AppSettings.from_argv(sys.argv[1:])
    st.title("Evaluation: which backbone retrieves better, and how sure we are")
    report_dir = st.sidebar.text_input("Report folder", settings.report_dir, key="report_dir")
    folder = Path(report_dir).expanduser()
    path = folder / "report.json"
    collections = database_collections(settings)
    in_db = sorted({meta.model for meta in collections.values()})
    unlabelled = [meta.labels for meta in collections.values() if meta.label_source.kind == "none"]
    if unlabelled:
        st.info(
            "This data set is unlabelled (built with --labels none): there are no precision figures, only the "
            "label-free comparison."
        )
    if not path.is_file() and show_label_free(folder):
        return
    if not path.is_file():
        st.warning(f"No report in {folder}. Write one (the page shows reports, it does not compute them):")
        models = in_db or list(BLOG_MODELS)
        # evaluate finds the data set (and the images the report shows) from the collections when one is indexed
        st.code(
            evaluate_command(settings.split, models, True, settings.uri, folder, settings.data_root or ""),
            language="bash",
            wrap_lines=True,
        )
        maps_note(settings, folder, collections)
        show_descriptors(folder)
        show_robustness(settings, folder, in_db or list(BLOG_MODELS))
        show_ann(settings, folder, in_db or list(BLOG_MODELS))
        return
    try:
        doc = load_report(str(path), path.stat().st_mtime)
    except ReportSchemaError as e:
        st.error(str(e))
        return
    proto = doc.protocol
    in_report = doc.models
    st.caption(
        f"Report {path} · {proto.dataset}/{proto.split} · models compared on {doc.variant_compared} "
        f"features · {doc.bootstrap.resamples} bootstrap resamples, {level_text(doc.bootstrap.level)} intervals"
    )
    missing = sorted(set(in_db) - set(in_report))
    rerun = evaluate_command(proto.split, in_report + missing, bool(doc.dino_knn), settings.uri, folder)
    stale = doc.changed_collections(collections)
    if stale:
        st.warning(
            "This report predates the collections as they are now: "
            + " ".join(stale)
            + " Its figures describe the old ones."
            + (f" In the database but not in this report: {', '.join(missing)}." if missing else "")
            + " To evaluate them as they are, rerun:"
        )
        st.code(rerun, language="bash", wrap_lines=True)
    elif missing:
        st.info(f"In the database but not in this report: {', '.join(missing)}. To add them, rerun:")
        st.code(rerun, language="bash", wrap_lines=True)
    randoms = doc.random_weight_models
    if randoms:
        st.error(f"RANDOM weights: {', '.join(randoms)}: their figures measure nothing but chance.")
    show_sections(doc, folder)
    disagreement_browser(doc, folder)
    show_label_free(folder)
    maps_note(settings, folder, collections, doc.variant_compared)
    show_descriptors(folder)
    show_robustness(settings, folder, in_report, doc.robustness)
    show_ann(settings, folder, in_report)


main()
