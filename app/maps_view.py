"""The Maps page's figures, free of Streamlit: one WebGL scatter (Plotly ``Scattergl``) per model's map.

Every map of a page gets the same class colours, the same highlighted classes and the same selected image, so
that a class or an image can be followed from one model's space to the next.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from indexer.maps import MapResult

GREY = "#c8c8c8"
MAX_POINTS = 50_000          # what the page draws per map (benchmarks/maps_render.py measures this size)


def class_colours(class_ids: Sequence[str]) -> Dict[str, str]:
    """A colour per class, the same on every map: hues spaced by the golden ratio, so neighbours in sorted order
    differ (200 classes cannot all be told apart; the class filter is for that)."""
    out = {}
    for i, c in enumerate(sorted(set(class_ids))):
        r, g, b = colorsys.hls_to_rgb((i * 0.618033988749895) % 1.0, (0.38, 0.5, 0.62)[i % 3], 0.75)
        out[c] = f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"
    return out


@dataclass
class MapFigure:
    figure: object              # plotly.graph_objects.Figure
    trace_ids: List[np.ndarray]  # image ids of each trace's points, in order: a selection's (curve, point) -> id


def map_figure(result: MapResult, colours: Dict[str, str], names: Dict[str, str], highlight: Sequence[str] = (),
               selected: Optional[int] = None, height: int = 460) -> MapFigure:
    """The scatter of one map: every point coloured by class, or the ``highlight`` classes coloured over the others
    in grey; ``selected`` (an image id) marked on top. Hover names the class and the image id."""
    import plotly.graph_objects as go
    ids = np.asarray(result.ids)
    coords = np.asarray(result.coords)
    classes = np.asarray(result.class_ids, dtype=object)
    labels = np.asarray([f"{names.get(c, c)} ({c})" for c in classes], dtype=object)
    size = 7 if len(ids) <= 1_000 else 4 if len(ids) <= 5_000 else 3 if len(ids) <= 20_000 else 2
    hover = "%{text}<br>id %{customdata}<extra></extra>"
    fig = go.Figure()
    trace_ids: List[np.ndarray] = []

    def add(mask: np.ndarray, colour, marker_size: float, opacity: float, name: str) -> None:
        fig.add_trace(go.Scattergl(
            x=coords[mask, 0], y=coords[mask, 1], mode="markers", name=name, customdata=ids[mask], text=labels[mask],
            hovertemplate=hover, marker=dict(color=colour, size=marker_size, opacity=opacity),
            # a click selects one point: the others keep their look (the selected image gets its own marker)
            selected=dict(marker=dict(opacity=opacity)), unselected=dict(marker=dict(opacity=opacity))))
        trace_ids.append(ids[mask])

    point_colours = np.asarray([colours.get(c, GREY) for c in classes], dtype=object)
    if highlight:
        lit = np.isin(classes, list(highlight))
        add(~lit, GREY, size, 0.35, "other classes")
        add(lit, point_colours[lit], size + 3, 0.95, "highlighted classes")
    else:
        add(np.ones(len(ids), bool), point_colours, size, 0.8, "images")
    if selected is not None and selected in set(ids.tolist()):
        add(ids == selected, "#000000", 16, 1.0, "selected image")
        fig.data[-1].marker.update(symbol="x", line=dict(width=2, color="#ffffff"))
    fig.update_layout(height=height, margin=dict(l=4, r=4, t=4, b=4), showlegend=False, dragmode="pan",
                      hovermode="closest", uirevision="map", plot_bgcolor="#ffffff",
                      xaxis=dict(showticklabels=False, showgrid=False, zeroline=False, title=None),
                      yaxis=dict(showticklabels=False, showgrid=False, zeroline=False, title=None))
    return MapFigure(fig, trace_ids)


def selected_id(points: Sequence[Dict], trace_ids: Sequence[np.ndarray]) -> Optional[int]:
    """The image id of the first point of a Streamlit plotly selection (its curve and point index)."""
    for p in points:
        curve, index = p.get("curve_number"), p.get("point_index", p.get("point_number"))
        if curve is None or index is None or curve >= len(trace_ids) or index >= len(trace_ids[curve]):
            continue
        return int(trace_ids[curve][index])
    return None
