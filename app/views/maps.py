"""Maps page: each model's embedding space in 2-D, side by side, linked to the images and to the main page.

The page reads maps written by ``python -m indexer maps`` into ``<report dir>/maps/`` (it never computes one: UMAP
of 10,000 images takes about a minute). The report dir comes from ``--report-dir`` after ``--`` on the streamlit
command line, then env ``RETRIEVAL_REPORT_DIR``, then ``data/report`` (as the Evaluation page's).

A model's map is of the collection its columns search: its own pooling's, or the descriptor the app was started
with for it (``--descriptors MODEL=NAME``; the maps made with ``indexer maps --descriptor NAME``). A map's title
names its descriptor when it is not the model's own pooling, and always when the model has collections of
several descriptors.

Hover names a point's class and image id (Plotly's hover box cannot show an image); a click selects the point:
its thumbnail and class appear above the maps, the same image is marked in every map, and "Open side by side"
makes it the query on the main page (``?query_id=N``).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `streamlit run` puts app/ on the path, not the repository
    sys.path.insert(0, str(ROOT))

from embed.common.logs import quiet_grpc_environment, quiet_third_party_logs  # noqa: E402

quiet_grpc_environment()  # before anything imports grpc
quiet_third_party_logs()

import numpy as np  # noqa: E402
import streamlit as st  # noqa: E402

from app import navigation  # noqa: E402
from app.backend import AppSettings, Backend, BadImage, model_title, safe_image_path  # noqa: E402
from app.cached import backend_for, cached_thumbnail  # noqa: E402
from app.maps_view import (  # noqa: E402
    MAX_POINTS,
    class_palette,
    map_descriptor,
    map_figure,
    selected_id,
    silhouette_rows,
    unlabelled_colours,
)
from app.notices import choose_data_set, show_collection_notices  # noqa: E402
from embed.sources.datasets import class_name  # noqa: E402
from indexer.build_command import DIR, BuildCommand  # noqa: E402
from indexer.catalog import indexed_collections, non_default_descriptor  # noqa: E402
from indexer.evaluation.maps import (  # noqa: E402
    MapParams,
    MapResult,
    available_params,
    load_map,
    map_title,
    maps_command,
)
from indexer.milvus_store import CollectionMeta, DatabaseLocked, StoreError  # noqa: E402

SELECTED = "map_selected_id"


@st.cache_data(show_spinner=False, max_entries=64)
def cached_map(report_dir: str, collection: str, meta_json: str, params: MapParams, mtime: float):
    # keyed by the cache file's mtime too: a recomputed map is read again
    return load_map(Path(report_dir), collection, CollectionMeta.from_json(meta_json), params)


def map_file_mtime(report_dir: Path, collection: str, params: MapParams) -> float:
    from indexer.evaluation.maps import cache_paths

    path = cache_paths(report_dir, collection, params)[1]
    return path.stat().st_mtime if path.is_file() else 0.0


def displayed(result: MapResult, limit: int = MAX_POINTS) -> MapResult:
    """At most ``limit`` points, the same seeded choice of ids in every map (ids are shared across collections)."""
    if result.n <= limit:
        return result
    keep = np.sort(np.random.default_rng(0).permutation(result.n)[:limit])
    return dataclasses.replace(
        result,
        ids=result.ids[keep],
        coords=result.coords[keep],
        class_ids=[result.class_ids[i] for i in keep],
        relpaths=[result.relpaths[i] for i in keep],
    )


def remember_selection(key: str, trace_ids) -> None:
    state = st.session_state.get(key)
    points = (state or {}).get("selection", {}).get("points", [])
    chosen = selected_id(points, trace_ids)
    if chosen is not None:
        st.session_state[SELECTED] = chosen


def selection_panel(backend: Backend, results: dict) -> None:
    """The selected image: thumbnail, class, where it is, and the link to the main page."""
    chosen = st.session_state.get(SELECTED)
    row = None
    for r in results.values():
        where: np.ndarray | list[int] = np.flatnonzero(r.ids == chosen) if chosen is not None else []
        if len(where):
            i = int(where[0])
            row = (r.class_ids[i], r.relpaths[i])
            break
    if row is None:
        st.info("Hover over a point for its class; click one to see its image here, marked in every map.")
        return
    cls, relpath = row
    left, right = st.columns([1, 5])
    with left:
        try:
            assert backend.data_root is not None  # the maps are of collections, which set it
            path = safe_image_path(backend.data_root, backend.settings.split, relpath)
            st.image(cached_thumbnail(str(path)), width="stretch")
        except BadImage as e:
            st.caption(f"(image unavailable: {e.reason})")
    with right:
        st.markdown(f"**Selected image:** `{relpath}` · id {chosen}")
        st.markdown(f"**Class:** {class_name(cls)} (`{cls}`)" if backend.labelled() else f"**Colour group:** `{cls}`")
        if st.button(
            "Open side by side", key="maps_open_side_by_side", help="query every model with this image on the main page"
        ):
            # the Search page reads ?query_id=N and opens that indexed image
            navigation.switch_to_search(query_params={"query_id": str(chosen)})


def silhouette_table(results: dict, titles: dict, highlight) -> None:
    st.subheader("Per-class separation (silhouette in the original space)")
    st.caption(
        "Mean silhouette of each class's images in the model's own space (Euclidean, the metric the "
        "comparison ranks by): +1 well apart from the other classes, 0 on a border, below 0 mixed in. "
        "A property of the embedding, not of the map; compare it with the report's per-class P@10. "
        "Empty: a class with one image in the sample has no silhouette (scikit-learn counts it as 0 in the "
        "overall mean)."
    )
    rows = silhouette_rows({titles[m]: r.quality for m, r in results.items()}, highlight)
    st.dataframe(rows, hide_index=True, height=320)


def no_maps_yet(backend: Backend, folder: Path, models: list, titles: dict) -> None:
    """No map of any chosen model: the commands that make them, one per descriptor (``maps --descriptor`` maps every
    model it is given under that one descriptor)."""
    st.warning(
        f"No maps of {', '.join(titles[m] for m in models)} in {folder / 'maps'} "
        f"yet (or their collections were rebuilt since). Make them (the page shows maps, it does not "
        f"compute them):"
    )
    by_descriptor: dict = {}
    for m in models:
        by_descriptor.setdefault(non_default_descriptor(backend.collections[m].meta.identity), []).append(m)
    settings = backend.settings
    for descriptor, group in by_descriptor.items():
        st.code(
            maps_command(settings.split, group, str(folder), settings.uri, descriptor=descriptor),
            language="bash",
            wrap_lines=True,
        )


def main() -> None:
    st.set_page_config(page_title="Maps", layout="wide")
    settings = AppSettings.from_argv(sys.argv[1:])
    st.title("Maps: each model's embedding space, side by side")
    report_dir = st.sidebar.text_input("Report folder", settings.report_dir, key="maps_report_dir")
    folder = Path(report_dir).expanduser()
    try:
        backend = backend_for(settings)
    except DatabaseLocked:
        st.error(f"The database {settings.uri} is open in another process that does not share it: see the main page.")
        return
    except StoreError as e:
        st.error(f"Cannot open the vector store: {e}")
        return
    backend = choose_data_set(backend, lambda root: backend_for(dataclasses.replace(settings, data_root=root)))
    if st.sidebar.button("Reload collections and maps", key="maps_reload"):
        backend.refresh()
        cached_map.clear()
    show_collection_notices(backend)
    indexed = [m for m in backend.model_choices() if m in backend.collections]
    if not indexed:
        st.warning(f"No collections for split '{settings.split}' in {backend.store.describe_target()} yet.")
        st.code(
            str(BuildCommand("all", settings.split, DIR, uri=settings.uri)),
            language="bash",
            wrap_lines=True,
        )
        return
    default = [m for m in backend.default_models() if m in indexed] or indexed
    chosen = st.sidebar.multiselect("Models", indexed, default=default, key="maps_models", format_func=model_title)
    models = [m for m in indexed if m in chosen]
    if not models:
        st.info("Choose one or more models in the sidebar.")
        return
    metas = {backend.collections[m].name: backend.collections[m].meta for m in models}
    # the collection a model's map is of: its own pooling's, or the descriptor the app was started with for it
    everything = indexed_collections(backend.store)
    descriptors = {m: map_descriptor(backend.collections[m], everything) for m in models}
    titles = {m: map_title(model_title(m), descriptors[m][0]) for m in models}
    options = available_params(folder, metas)
    if not options:
        no_maps_yet(backend, folder, models, titles)
        return
    params = st.sidebar.selectbox("Map", options, format_func=MapParams.label, key="maps_params")
    results = {}
    for m in models:
        name = backend.collections[m].name
        r = cached_map(str(folder), name, metas[name].to_json(), params, map_file_mtime(folder, name, params))
        if r is not None:
            results[m] = r
    labelled = backend.labelled()
    colours = "classes"
    if not labelled and results:  # no classes: colour by what a user can read from the points instead
        results, colours = unlabelled_colours(results, folder, backend.settings.split)
    all_classes = sorted({c for r in results.values() for c in r.class_ids})
    highlight = st.sidebar.multiselect(
        "Highlight classes (in every map)" if labelled else "Highlight folders (in every map)",
        all_classes,
        key="maps_highlight",
        format_func=lambda c: f"{class_name(c)} ({c})" if labelled else c,
    )
    palette = class_palette(all_classes)
    names = {c: class_name(c) if labelled else c for c in all_classes}
    st.caption(f"{params.label()} · maps in {folder / 'maps'} · colours: {colours} (the same in every map)")
    selection_panel(backend, results)
    for col, m in zip(st.columns(len(models)), models):
        with col:
            st.subheader(titles[m])
            if descriptors[m][1]:
                st.caption(descriptors[m][1])
            r = results.get(m)
            if r is None:
                st.warning(f"No {params.label()} map of this collection as it is now.")
                meta = backend.collections[m].meta
                st.code(
                    maps_command(
                        settings.split,
                        [m],
                        str(folder),
                        settings.uri,
                        params.method,
                        params.features,
                        descriptor=non_default_descriptor(meta.identity),
                    ),
                    language="bash",
                    wrap_lines=True,
                )
                continue
            shown = displayed(r)
            st.caption(
                f"{params.label()} · {r.quality.caption(r.n)} · {r.n:,} images"
                + (f", {shown.n:,} drawn (seeded sample)" if shown.n < r.n else "")
            )
            fig = map_figure(shown, palette, names, highlight, st.session_state.get(SELECTED))
            key = f"map_{m}"
            st.plotly_chart(
                fig.figure,
                key=key,
                on_select=functools.partial(remember_selection, key, fig.trace_ids),
                selection_mode="points",
                config={"displaylogo": False, "scrollZoom": True},
                width="stretch",
            )
    if results and labelled:  # a silhouette needs classes
        silhouette_table(results, titles, set(highlight))


main()
