"""The robustness section as text, from robustness.json: shared by robustness.md, report.md/html and the app's
Evaluation page. Free of NumPy and torch, so that the page can show it without loading them."""

from __future__ import annotations

from typing import Dict, List, Tuple

from indexer.evaluation.document import CONFIDENCE, level_text
from indexer.evaluation.robustness_measures import BINARY_MEASURES, ROBUSTNESS_MEASURES

TITLES = {m.name: m.title for m in ROBUSTNESS_MEASURES if m.own_table}
SHOWN = tuple(TITLES)


def confidence_of(doc: Dict) -> str:
    """The level of ``doc``'s intervals in words; a document without one was written when the level was always
    ``CONFIDENCE``."""
    return level_text(doc.get("confidence", CONFIDENCE))


def value_text(record: Dict, measure: str) -> str:
    low, high = record["ci"][measure]
    return f"{record[measure]:.3f} [{low:.3f}, {high:.3f}]"


def severity_text(record: Dict) -> str:
    value = record[record["param"]]
    return f"{record['param']} = {value:.4g}"


def measures_present(doc: Dict) -> List[str]:
    return [m for m in SHOWN if any(m in r for r in doc["records"])]


def measure_table(doc: Dict, measure: str) -> Tuple[List[str], List[List[str]]]:
    """(headers, rows): one row per family and severity, one column per model (mean [CI]); for class P@10
    each model's clean P@10 on the same queries follows its column."""
    models = doc["models"]
    headers = ["family", "severity"]
    for m in models:
        headers.append(m)
        if measure == "class_p10":
            headers.append(f"{m} clean")
    rows = []
    keys = list(dict.fromkeys((r["family"], r["severity"]) for r in doc["records"] if measure in r))
    for family, level in keys:
        here = {r["model"]: r for r in doc["records"] if r["family"] == family and r["severity"] == level}
        row = [family, severity_text(next(iter(here.values())))]
        for m in models:
            r = here.get(m)
            row.append(value_text(r, measure) if r else "")
            if measure == "class_p10":
                row.append(value_text(r, "clean_p10") if r else "")
        rows.append(row)
    return headers, rows


def pair_table(doc: Dict, measure: str = "copy_r1") -> Tuple[List[str], List[List[str]]]:
    """(headers, rows) of the paired differences on one measure, with McNemar's p where the measure is binary."""
    method = "exact McNemar" if measure in BINARY_MEASURES else "paired bootstrap"
    headers = ["family", "severity", "pair", "difference", f"{confidence_of(doc)} CI ({method})", "p (exact McNemar)"]
    rows = []
    for p in doc["pairs"]:
        if p["measure"] != measure:
            continue
        value = p[_param(doc, p["family"])]
        pv = f"{p['mcnemar']['p_value']:.3g}" if "mcnemar" in p else ""
        rows.append(
            [
                p["family"],
                f"{_param(doc, p['family'])} = {value:.4g}",
                f"{p['a']} − {p['b']}",
                f"{p['difference']:+.3f}",
                f"[{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}]",
                pv,
            ]
        )
    return headers, rows


def _param(doc: Dict, family: str) -> str:
    return next(f["param"] for f in doc["families"] if f["name"] == family)


def protocol_text(doc: Dict) -> str:
    labels = (
        "labelled: class P@10 measured"
        if doc["labelled"]
        else "unlabelled: label-free measures only (copy retrieval, stability, shift consistency)"
    )
    return (
        f"{doc['queries']} queries from {doc['dataset']}/{doc['split']} ({doc['protocol']['queries']}; seed "
        f"{doc['seed']}), {labels}. {doc['protocol']['embedding']}; search: {doc['protocol']['search']}. "
        f"Neighbour lists: {doc['protocol']['neighbour_lists']}. Statistics: {doc['protocol']['statistics']}, "
        f"{doc['resamples']} resamples. "
        + (f"Significance: {doc['protocol']['significance']}. " if "significance" in doc["protocol"] else "")
        + "Families: "
        + "; ".join(
            f"{f['name']} ({f['param']}: {', '.join(f'{v:.4g}' for v in f['levels'])}; {f['source']})"
            for f in doc["families"]
        )
        + "."
    )


def add_robustness_section(d, doc: Dict, level: int = 2, title: str = "Robustness: transformed queries") -> None:
    """Headings, sentences, tables and plots of ``doc`` (robustness.json) into a report MarkupDocument ``d``."""
    d.h(title, level)
    d.p(protocol_text(doc))
    d.paragraphs(doc["sentences"])
    figures = {f.split("robustness_", 1)[-1].rsplit(".", 1)[0]: f for f in doc.get("figures", [])}
    for measure in measures_present(doc):
        d.h(TITLES[measure], level + 1)
        d.table(*measure_table(doc, measure))
        if measure in figures:
            d.image(
                figures[measure],
                f"{TITLES[measure]} against severity, one line per model ({confidence_of(doc)} CI bars)",
            )
    if len(doc["models"]) > 1:
        d.h("Paired differences on copy_r1", level + 1)
        d.table(*pair_table(doc, "copy_r1"))
