"""The report's tables as text, from its JSON: shared by report.md/html and the app's Evaluation page.

Kept free of NumPy, torch and the evaluation so that the page can render a report without loading them.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

TOP_OVERLAP = 10   # the agreement part compares each pair's top-10 neighbour sets


def ci_text(d: Dict) -> str:
    """A bootstrap interval as ``mean [low, high]``."""
    return f"{d['mean']:.4f} [{d['low']:.4f}, {d['high']:.4f}]"


def agreement_table(agreement: Sequence[Dict]) -> Tuple[List[str], List[List[str]]]:
    """(headers, rows) of the agreement part; the JSON names the "only" shares after the models, the table
    gives every pair the same columns."""
    headers = ["pair", f"mean top-{TOP_OVERLAP} overlap", "P@1 both right", "only first", "only second", "neither"]
    rows = []
    for a in agreement:
        shares = [a["p_at_1"][k] for k in ("both_right", f"only_{a['a']}", f"only_{a['b']}", "neither")]
        rows.append([f"{a['a']} / {a['b']}"] + [f"{v:.3f}" for v in [a[f"top{TOP_OVERLAP}_overlap"], *shares]])
    return headers, rows
