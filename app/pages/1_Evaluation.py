"""Evaluation page: the comparison report's tables and plots, and a browser of the queries where models disagree.

The page reads a report written by ``python -m indexer evaluate ... --report DIR`` (it does not compute one:
a report takes minutes, a page must not). DIR comes from ``--report-dir`` after ``--`` on the streamlit command
line, then env ``RETRIEVAL_REPORT_DIR``, then ``data/report``; the sidebar can change it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `streamlit run` puts app/ on the path, not the repository
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app.backend import Settings  # noqa: E402
from indexer.report_tables import agreement_table, ci_text  # noqa: E402
from indexer.store import StoreError, VectorStore  # noqa: E402

DEFAULT_REPORT_DIR = os.environ.get("RETRIEVAL_REPORT_DIR", "data/report")


def report_dir_from_argv(argv) -> str:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--report-dir", default=DEFAULT_REPORT_DIR)
    return p.parse_known_args(list(argv))[0].report_dir


@st.cache_resource(show_spinner=False)
def get_store(uri: str, token: str) -> VectorStore:
    return VectorStore(uri, token)


@st.cache_data(show_spinner=False, ttl=30)
def load_report(path: str, mtime: float) -> dict:
    return json.loads(Path(path).read_text())


def database_models(settings: Settings) -> dict:
    """model -> rows, for the collections of the app's split in the database."""
    from indexer.query import indexed_collections
    try:
        colls = indexed_collections(get_store(settings.uri, settings.token))
    except StoreError as e:
        st.warning(f"Cannot list the database's collections: {e}")
        return {}
    return {c.meta.model: c.meta.rows for c in colls if c.meta.split == settings.split}


def show_tables(doc: dict, folder: Path) -> None:
    st.subheader("Every metric with its 95% confidence interval")
    names = ["P@1", "P@10", "R@10", "R-precision", "MAP@R", "kNN@20", "DINO kNN top-1"]
    st.table([{"model (features)": m, **{n: ci_text(v[n]) for n in names if n in v}}
              for m, v in doc["confidence_intervals"].items()])
    st.image(str(folder / doc["figures"]["confidence_intervals"]))

    st.subheader("Paired differences")
    for sentence in doc["sentences"] or ["One model only: nothing to pair."]:
        st.markdown(f"- {sentence}")
    if doc["pairs"]:
        st.table([{"pair": f"{p['a']} − {p['b']}", "metric": label, "difference": f"{m['mean']:+.4f}",
                   "95% CI": f"[{m['low']:+.4f}, {m['high']:+.4f}]",
                   "p (McNemar)": "" if m["p_value"] is None else f"{m['p_value']:.3g}"}
                  for p in doc["pairs"] for label, m in p["metrics"].items()])

    if doc.get("per_class"):
        st.subheader("Per class: where each model gains or loses most")
        for model, movers in doc["per_class"]["movers"].items():
            st.markdown(f"**{model}**")
            st.table([{"": kind, "class": f"{c['class_name']} ({c['class_id']})", "vs others": f"{c['gain']:+.3f}"}
                      for kind, items in (("most ahead", movers["gains"]), ("least ahead", movers["losses"])) for c in items])
        st.image(str(folder / doc["figures"]["per_class"]))

    if doc.get("agreement"):
        st.subheader("Agreement")
        headers, rows = agreement_table(doc["agreement"])
        st.table([{**dict(zip(headers, row)), "queries": a["p_at_1"]["queries"]}
                  for row, a in zip(rows, doc["agreement"])])

    if doc.get("style"):
        st.subheader("Stylistically closer, measured")
        for measure, entry in doc["style"]["measures"].items():
            st.table([{"": name, f"{measure} similarity (95% CI)": ci_text(v)} for name, v in entry.items()
                      if " - " not in name])
        for sentence in doc["style"]["sentences"]:
            st.markdown(f"- {sentence}")

    if doc.get("dino_knn"):
        st.subheader("DINO-style kNN")
        st.table([{"model": m, "top-1 (95% CI)": ci_text(v), "protocol": v["protocol"]}
                  for m, v in doc["dino_knn"].items()])

    st.subheader("Classifier accuracy beside retrieval")
    checks = [{"model": m, "top-1": c["top1"], "top-5": c["top5"], "images": c["n"]}
              for m, c in doc["accuracy"]["checks"].items() if c]
    if checks:
        st.table(checks)
    for sentence in doc["accuracy"]["sentences"]:
        st.markdown(f"- {sentence}")


def disagreement_browser(doc: dict, folder: Path) -> None:
    st.subheader("Where the models disagree most")
    galleries = doc.get("galleries") or []
    if not galleries:
        st.info("This report has no galleries (they need two or more models and --data-root).")
        return
    labels = {g["query_id"]: f"query id {g['query_id']} · {g['relpath']} · " +
              ", ".join(f"{m} P@10 {v['p_at_10']:.1f}" for m, v in g["models"].items()) for g in galleries}
    chosen = st.selectbox("Query", list(labels), format_func=labels.get, key="eval_query")
    gallery = next(g for g in galleries if g["query_id"] == chosen)
    st.image(str(folder / "galleries" / gallery["png"]), caption="query, then each model's top 5 (green: hit, red: miss)")
    if st.button("Open side by side", key="open_side_by_side"):
        # app/main.py reads ?query_id=N and opens that indexed image (its hook for this page)
        st.switch_page("main.py", query_params={"query_id": str(chosen)})


def show_robustness(folder: Path) -> None:
    """The robustness section, when ``python -m indexer robustness --report DIR`` wrote robustness.json here."""
    from indexer.robustness_tables import TITLES, measure_table, measures_present, pair_table, protocol_text
    path = folder / "robustness.json"
    if not path.is_file():
        st.caption(f"No robustness results in {folder}: `python -m indexer robustness --split SPLIT --models ... "
                   f"--report {folder}` adds them.")
        return
    doc = load_report(str(path), path.stat().st_mtime)
    st.header("Robustness: transformed queries")
    st.caption(protocol_text(doc))
    for sentence in doc["sentences"]:
        st.markdown(f"- {sentence}")
    present = measures_present(doc)
    measure = st.selectbox("Measure", present, format_func=TITLES.get, key="robustness_measure")
    headers, rows = measure_table(doc, measure)
    st.table([dict(zip(headers, row)) for row in rows])
    figure = folder / f"robustness_{measure}.png"
    if figure.is_file():
        st.image(str(figure))
    if len(doc["models"]) > 1 and measure in ("copy_r1", "copy_r10", "shift_top1"):
        headers, rows = pair_table(doc, measure)
        st.table([dict(zip(headers, row)) for row in rows])


def main() -> None:
    st.set_page_config(page_title="Evaluation", layout="wide")
    settings = Settings.from_argv(sys.argv[1:])
    st.title("Evaluation: which backbone retrieves better, and how sure we are")
    report_dir = st.sidebar.text_input("Report folder", report_dir_from_argv(sys.argv[1:]), key="report_dir")
    folder = Path(report_dir).expanduser()
    path = folder / "report.json"
    in_db = database_models(settings)
    if not path.is_file():
        st.warning(f"No report in {folder}. Write one (the page shows reports, it does not compute them):")
        models = ",".join(sorted(in_db)) or "gresnet,convnext,vit"
        # evaluate finds the data set (and the images the report shows) from the collections when one is indexed
        data_root = f" --data-root {settings.data_root}" if settings.data_root else ""
        st.code(f"python -m indexer evaluate --split {settings.split} --models {models}{data_root} --holdout 0.2 "
                f"--uri {settings.uri} --report {folder}", language="bash")
        show_robustness(folder)
        return
    doc = load_report(str(path), path.stat().st_mtime)
    proto = doc["protocol"]
    in_report = sorted({r["model"] for r in doc["results"]})
    st.caption(f"Report {path} · {proto['dataset']}/{proto['split']} · models compared on {doc['variant_compared']} "
               f"features · {doc['bootstrap']['resamples']} bootstrap resamples")
    missing = sorted(set(in_db) - set(in_report))
    if missing:
        st.info(f"In the database but not in this report: {', '.join(missing)}. Rerun `python -m indexer evaluate "
                f"--report {folder}` with them in --models.")
    randoms = sorted({r["model"] for r in doc["results"] if r["random_weights"]})
    if randoms:
        st.error(f"RANDOM weights: {', '.join(randoms)}: their figures measure nothing but chance.")
    show_tables(doc, folder)
    disagreement_browser(doc, folder)
    show_robustness(folder)


main()
