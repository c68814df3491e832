"""The Maps page's figures, free of Streamlit: one WebGL scatter (Plotly ``Scattergl``) per model's map.

Every map of a page gets the same class colours, the same highlighted classes and the same selected image, so
that a class or an image can be followed from one model's space to the next.
"""

from __future__ import annotations

import colorsys
import itertools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from embed.sources.datasets import class_name
from indexer.catalog import IndexedCollection, collection_descriptor_label, non_default_descriptor
from indexer.evaluation.maps import MapQuality, MapResult

GREY = "#c8c8c8"
# highlighted classes: Plotly's Dark24, distinct from each other and from the grey of the rest
HIGHLIGHT_COLOURS = (
    "#2E91E5",
    "#E15F99",
    "#1CA71C",
    "#FB0D0D",
    "#DA16FF",
    "#222A2A",
    "#B68100",
    "#750D86",
    "#EB663B",
    "#511CFB",
    "#00A08B",
    "#FB00D1",
    "#FC0080",
    "#B2828D",
    "#6C7C32",
    "#778AAE",
    "#862A16",
    "#A777F1",
    "#620042",
    "#1616A7",
    "#DA60CA",
    "#6C4516",
    "#0D2A63",
    "#AF0038",
)
MAX_POINTS = 50_000  # what the page draws per map (benchmarks/maps_render.py measures this size)


@dataclass
class ClassPalette:
    """A colour per class, the same on every map. Points carry their class's number and the figure a stepped
    colour scale (Plotly validates 50,000 colour strings in seconds, numbers in milliseconds)."""

    classes: List[str]
    colours: List[str]

    def __post_init__(self):
        self.index = {c: i for i, c in enumerate(self.classes)}

    def codes(self, class_ids: Iterable[str]) -> np.ndarray:
        return np.asarray([self.index.get(c, -1) for c in class_ids], np.int32)

    def marker(self) -> Dict:
        """marker settings mapping code i to colours[i]: one flat band per class on [-0.5, K - 0.5]."""
        k = max(1, len(self.classes))
        scale = []
        for i, colour in enumerate(self.colours or [GREY]):
            scale += [[i / k, colour], [(i + 1) / k, colour]]
        return dict(colorscale=scale, cmin=-0.5, cmax=k - 0.5, showscale=False)


def class_palette(class_ids: Sequence[str]) -> ClassPalette:
    """Hues spaced by the golden ratio, so neighbours in sorted order differ (200 classes cannot all be told
    apart; the class filter is for that)."""
    classes = sorted(set(class_ids))
    colours = []
    for i in range(len(classes)):
        r, g, b = colorsys.hls_to_rgb((i * 0.618033988749895) % 1.0, (0.38, 0.5, 0.62)[i % 3], 0.75)
        colours.append(f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}")
    return ClassPalette(classes, colours)


@dataclass
class MapFigure:
    figure: object  # plotly.graph_objects.Figure
    trace_ids: List[np.ndarray]  # image ids of each trace's points, in order: a selection's (curve, point) -> id


def map_figure(
    result: MapResult,
    palette: ClassPalette,
    names: Dict[str, str],
    highlight: Sequence[str] = (),
    selected: Optional[int] = None,
    height: int = 460,
) -> MapFigure:
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

    codes = palette.codes(classes)

    def add(
        mask: np.ndarray,
        colour: Optional[str],
        marker_size: float,
        opacity: float,
        name: str,
        showlegend: bool = False,
        **style,
    ) -> None:
        """One trace of the points in ``mask``: in ``colour``, or (None) each in its class's colour."""
        marker = dict(size=marker_size, opacity=opacity, **style)
        marker.update(dict(color=colour) if colour else dict(color=codes[mask], **palette.marker()))
        fig.add_trace(
            go.Scattergl(
                x=coords[mask, 0],
                y=coords[mask, 1],
                mode="markers",
                name=name,
                showlegend=showlegend,
                customdata=ids[mask],
                text=labels[mask],
                hovertemplate=hover,
                marker=marker,
                # a click selects one point: the others keep their look (the selected image gets its own marker)
                selected=dict(marker=dict(opacity=opacity)),
                unselected=dict(marker=dict(opacity=opacity)),
            )
        )
        trace_ids.append(ids[mask])

    if highlight:
        # the highlighted classes in colours far apart (the legend names them), the same order in every map
        add(~np.isin(classes, list(highlight)), GREY, size, 0.35, "other classes")
        for colour, cls in zip(itertools.cycle(HIGHLIGHT_COLOURS), highlight):
            add(classes == cls, colour, size + 3, 0.95, f"{names.get(cls, cls)} ({cls})", showlegend=True)
    else:
        add(np.ones(len(ids), bool), None, size, 0.8, "images")
    if selected is not None and selected in set(ids.tolist()):
        add(ids == selected, "#000000", 16, 1.0, "selected image", symbol="x", line=dict(width=2, color="#ffffff"))
    fig.update_layout(
        height=height,
        margin=dict(l=4, r=4, t=4, b=4),
        showlegend=bool(highlight),
        dragmode="pan",
        legend=dict(orientation="h", yanchor="top", y=-0.01, x=0, font=dict(size=11)),
        hovermode="closest",
        uirevision="map",
        plot_bgcolor="#ffffff",
        xaxis=dict(showticklabels=False, showgrid=False, zeroline=False, title=None),
        yaxis=dict(showticklabels=False, showgrid=False, zeroline=False, title=None),
    )
    return MapFigure(fig, trace_ids)


def selected_id(points: Sequence[Dict], trace_ids: Sequence[np.ndarray]) -> Optional[int]:
    """The image id of the first point of a Streamlit plotly selection (its curve and point index)."""
    for p in points:
        curve, index = p.get("curve_number"), p.get("point_index", p.get("point_number"))
        if curve is None or index is None or curve >= len(trace_ids) or index >= len(trace_ids[curve]):
            continue
        return int(trace_ids[curve][index])
    return None


def silhouette_rows(qualities: Dict[str, MapQuality], highlight: Iterable[str] = ()) -> List[Dict]:
    """The per-class silhouette table: a row per class (the highlighted ones first), its images in the sample and
    each model's value; None where a class has a single image (scikit-learn gives it 0, which means "on a border",
    and it has no other image to be near)."""
    wanted = set(highlight)
    per_model = {title: {c.class_id: c for c in q.per_class} for title, q in qualities.items()}
    classes = sorted({c for v in per_model.values() for c in v}, key=lambda c: (c not in wanted, class_name(c)))
    return [
        {
            "class": f"{class_name(c)} ({c})",
            "images": max(v[c].n for v in per_model.values() if c in v),
            **{title: round(v[c].silhouette, 3) if c in v and v[c].n > 1 else None for title, v in per_model.items()},
        }
        for c in classes
    ]


def folder_of(relpath: str) -> str:
    """The folder an image lies in, relative to the image folder ('(top level)' for the folder itself)."""
    return relpath.rsplit("/", 1)[0] if "/" in relpath else "(top level)"


def unlabelled_colours(results: dict, report_dir: Path, split: str):
    """(maps, what the colours are) for an unlabelled data set: each image's agreement across the models when the
    label-free report in ``report_dir`` has it, else the folder it lies in, else (a flat folder) its file type."""
    from indexer.evaluation.label_free import agreement_band, read_agreement

    first = next(iter(results.values()))
    dataset = first.identity.dataset
    agreement = read_agreement(report_dir, dataset, split)
    if agreement:
        keys = {m: [agreement_band(agreement.get(int(i), 0.0)) for i in r.ids] for m, r in results.items()}
        what = "agreement between the models (top-10 overlap, from label_free.json)"
    elif len({folder_of(p) for r in results.values() for p in r.relpaths}) > 1:
        keys = {m: [folder_of(p) for p in r.relpaths] for m, r in results.items()}
        what = "folders"
    else:
        keys = {m: [Path(p).suffix.lower().lstrip(".") or "?" for p in r.relpaths] for m, r in results.items()}
        what = "file types (one folder)"
    return {m: replace(r, class_ids=keys[m]) for m, r in results.items()}, f"{what}; the data set is unlabelled"


def map_descriptor(shown: IndexedCollection, everything: Sequence[IndexedCollection]) -> Tuple[str, str]:
    """(the descriptor the title of ``shown``'s map names, a note on its model's other descriptors or "").

    The title names the descriptor when it is not the model's own pooling as stored; when the model has
    collections of several descriptors (``everything``: the database's), it names it always, so that each map says
    which one it shows, and the note names the others and how to see their maps."""
    meta = shown.meta
    others = sorted(
        {
            collection_descriptor_label(c.meta)
            for c in everything
            if c.name != shown.name and c.meta.key.matches(meta.model, meta.split, meta.dataset)
        }
    )
    if not others:
        return non_default_descriptor(meta.identity), ""
    label = collection_descriptor_label(meta)
    note = (
        f"This map shows the {label} collection; {meta.model} is also indexed as {', '.join(others)}. Another "
        f"descriptor's map: `python -m indexer maps --descriptor NAME`, shown here when the app is started with "
        f"`--descriptors {meta.model}=NAME`."
    )
    return label, note
