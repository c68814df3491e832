"""One colour per model in every figure: the report's bars and curves and the robustness panels."""

from __future__ import annotations

from typing import Dict, Sequence

from embed.models.catalog import REGISTRY

# matplotlib's default cycle: the catalog's models take the first ones, always the same, in catalog order
CYCLE = [f"C{i}" for i in range(10)]


def model_colours(models: Sequence[str]) -> Dict[str, str]:
    """``models`` -> a matplotlib colour each: a catalog model always gets its own, any other model the next
    colour no catalog model of ``models`` uses, in the order given (after ten models, colours repeat)."""
    catalog = list(REGISTRY)
    fixed = {m: CYCLE[catalog.index(m) % len(CYCLE)] for m in models if m in catalog}
    free = [c for c in CYCLE if c not in fixed.values()] or CYCLE
    others = [m for m in dict.fromkeys(models) if m not in fixed]
    return {**fixed, **{m: free[i % len(free)] for i, m in enumerate(others)}}
