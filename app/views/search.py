"""Search page: the chosen models' results for one query, side by side, each column its model's collection.

A query is an indexed image (by class or file name, position or at random, or a hit's "query" button) or an
upload, optionally transformed as the robustness evaluation transforms queries. Settings come from the streamlit
command line after ``--`` (``AppSettings.from_argv``); ``?query_id=N`` opens that indexed image (the Evaluation
and Maps pages link here so).
"""

from __future__ import annotations

import dataclasses
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `streamlit run` puts app/ on the path, not the repository
    sys.path.insert(0, str(ROOT))

from embed.common.logs import quiet_grpc_environment, quiet_third_party_logs  # noqa: E402

quiet_grpc_environment()  # before anything imports grpc
quiet_third_party_logs()

import streamlit as st  # noqa: E402

from app.backend import (  # noqa: E402
    MAX_UPLOAD_MB,
    AppSettings,
    Backend,
    BadImage,
    Query,
    load_upload,
    model_title,
    safe_image_path,
)
from app.cached import backend_for, cached_thumbnail  # noqa: E402
from app.comparison import Comparison, SearchScope  # noqa: E402
from app.notices import choose_data_set, show_collection_notices  # noqa: E402
from embed.sources.datasets import class_name  # noqa: E402
from indexer.build_command import BuildCommand  # noqa: E402
from indexer.milvus_store import DatabaseLocked, StoreError  # noqa: E402


def app_command(settings: AppSettings, uri: str) -> str:
    """This app's own command line with another --uri: every setting kept, so it opens the same data."""
    parts = ["streamlit run app/main.py --", f"--uri {uri}", f"--split {settings.split}"]
    if settings.data_root:
        parts.append(f"--data-root {settings.data_root}")
    if settings.extra_models:
        parts.append(f"--extra-models {','.join(settings.extra_models)}")
    return " ".join(parts)


def show_locked(settings: AppSettings) -> None:
    """One message: what happened, then the commands that fix it, in full."""
    st.error(
        f"The database {settings.uri} is open in another process that does not share it (not this tool, or an "
        f"old version of it). Stop that process, or serve the database from one process and point the app at it:"
    )
    st.code(
        f"python -m indexer serve --data-dir {settings.uri}\n{app_command(settings, 'http://127.0.0.1:19530')}",
        language="bash",
        wrap_lines=True,
    )


def pick_query(backend: Backend, comparison: Comparison) -> Query | None:
    st.sidebar.header("Query")
    source = st.sidebar.radio("Source", ["Indexed image", "Upload"], key="source", horizontal=True)
    if source == "Upload":
        up = st.sidebar.file_uploader(
            "Image (JPEG, PNG, WebP)", type=["jpg", "jpeg", "png", "webp"], key="upload", max_upload_size=MAX_UPLOAD_MB
        )
        if up is None:
            st.info("Upload an image in the sidebar to query with it.")
            return None
        try:
            image = load_upload(up.getvalue())
        except BadImage as e:
            st.error(f"Cannot use {up.name}: {e.reason}")
            return None
        return Query(image, None, None, up.name)

    if not comparison.columns:
        return None
    if not comparison.shared:
        st.warning("The shown collections have no image in common: choose other models, or upload an image.")
        return None
    # positions, classes and Random draw from the images every shown column holds: each column answers the same query
    if comparison.labelled:
        classes = sorted({im.class_id for im in comparison.shared})
        choice = st.sidebar.selectbox(
            "Filter by class",
            ["(all classes)"] + classes,
            key="class_filter",
            format_func=lambda c: c if c.startswith("(") else f"{class_name(c)} ({c})",
        )
        pool = [im for im in comparison.shared if choice == "(all classes)" or im.class_id == choice]
    else:  # no classes to filter by: the file names are what a user knows the images by
        text = st.sidebar.text_input("Filter by file name", key="name_filter", placeholder="part of a path")
        choice = f"(name {text.strip().lower()})" if text.strip() else "(all classes)"
        pool = [im for im in comparison.shared if text.strip().lower() in im.relpath.lower()]
        if not pool:
            st.warning(f"No indexed image's path contains {text.strip()!r}.")
            return None
    ids = [im.id for im in pool]
    current = st.session_state.get("query_id")
    # a clicked hit may be an image only some columns hold: kept, and the others say so
    if current is None or comparison.image(current) is None or (choice != "(all classes)" and current not in ids):
        current = st.session_state["query_id"] = ids[0]
    pos_key = f"position_{choice}"

    def on_position():
        st.session_state["query_id"] = ids[st.session_state[pos_key]]

    def on_random():
        st.session_state["query_id"] = random.choice(ids)

    st.sidebar.button("Random image", key="random", on_click=on_random)
    # the widget shows where the current query sits, however it was chosen (position, random, click)
    if current in ids:
        st.session_state[pos_key] = ids.index(current)
    else:
        st.sidebar.caption(
            f"The query (position {current} in the collections that hold it) is not one every column "
            f"holds; the position below picks among those."
        )
    label = f"Position (0–{len(ids) - 1}, sorted by path)"
    if comparison.differs:
        label += f" among the {len(ids):,} images every column holds"
    st.sidebar.number_input(label, 0, len(ids) - 1, key=pos_key, on_change=on_position)
    indexed = comparison.image(current)
    assert indexed is not None  # checked above, or current is a shared image
    try:
        return backend.query_for_image(indexed)
    except BadImage as e:
        st.error(f"Cannot open indexed image {indexed.relpath}: {e.reason}")
        return None


# "transform the query": the robustness evaluation's own transforms (indexer/evaluation/query_transforms.py) --

NO_TRANSFORM = "none"


def transform_control(query: Query) -> Query:
    """The query as the sidebar's transform changes it; a changed indexed image keeps its id as the original.
    The choices are the robustness families that have a control (query_transforms.CONTROLLED_FAMILIES)."""
    from indexer.evaluation.query_transforms import CONTROLLED_FAMILIES, FAMILIES

    st.sidebar.header("Transform the query")
    kind = st.sidebar.selectbox(
        "Transform",
        (NO_TRANSFORM, *(f.name for f in CONTROLLED_FAMILIES)),
        key="transform",
        help="applied to the image before it is embedded, as the family of that name in `python -m indexer robustness`",
    )
    control = FAMILIES[kind].control if kind != NO_TRANSFORM else None
    if control is None:
        return query
    values = [
        st.sidebar.slider(
            s.label,
            s.low,
            max(8, max(query.image.size)) if s.high is None else s.high,
            s.default,
            control.step,
            key=s.key,
        )
        for s in control.sliders
    ]
    image, what = control.apply(query.image, *values), control.words.format(*values)
    return Query(image, query.class_id, None, f"{query.label} ({what})", original_id=query.indexed_id)


def requery(hit_id: int) -> None:
    st.session_state["source"] = "Indexed image"
    st.session_state["class_filter"] = "(all classes)"
    st.session_state["query_id"] = hit_id
    st.session_state[SCROLL_KEY] = st.session_state.get(SCROLL_KEY, 0) + 1


SCROLL_KEY = "scroll_to_top"  # counts the clicks on a hit's "query": each run after one scrolls up to the new query


def scroll_to_top() -> None:
    """After a click on a hit's "query", back to the top of the page, where the new query is: Streamlit keeps the
    scroll position, which left the new query out of view. A script in a zero-height component (same origin)."""
    clicks = st.session_state.get(SCROLL_KEY, 0)
    if not clicks or st.session_state.get(SCROLL_KEY + "_done") == clicks:
        return
    st.session_state[SCROLL_KEY + "_done"] = clicks
    import streamlit.components.v1 as components

    components.html(
        f"""<script>/* click {clicks} */
        const doc = window.parent.document;
        for (const el of [doc.querySelector('[data-testid="stMain"]'), doc.querySelector('section.main'),
                          doc.querySelector('[data-testid="stAppViewContainer"]')]) {{
          if (el) el.scrollTo({{top: 0}});
        }}
        window.parent.scrollTo({{top: 0}});
        </script>""",
        height=0,
    )


def export_buttons(query: Query, results, k: int) -> None:
    """The columns' results as a table (one row per model and rank), to download as CSV or JSON."""
    import json

    from app.backend import comparison_csv, comparison_rows

    rows = comparison_rows(query, results, k)
    if not rows:
        return
    name = f"comparison_{query.indexed_id if query.indexed_id is not None else 'upload'}_top{k}"
    st.download_button("Download CSV", comparison_csv(rows), f"{name}.csv", "text/csv", key="export_csv")
    st.download_button(
        "Download JSON", json.dumps(rows, indent=1), f"{name}.json", "application/json", key="export_json"
    )


def show_column(backend: Backend, result, k: int, original: int | None = None) -> None:
    st.subheader(result.title)
    if result.problem:
        st.warning(result.problem)
        if result.build_command:
            st.markdown("Build it with:")
            st.code(result.build_command, language="bash", wrap_lines=True)
        return
    if result.random_weights:
        st.error("⚠ " + result.weights)
    else:
        st.caption(result.weights)
    if result.incomplete:
        st.warning(result.incomplete)
    if result.descriptor:
        st.caption(f"descriptor: **{result.descriptor}** (docs/descriptors.md)")
    meta = f"query latency **{result.latency_text}** · top {len(result.hits)} by squared L2 (d²)"
    if result.precision is not None:
        meta += f" · P@{k} **{result.precision_text}**"
    if original is not None:
        meta += (
            f" · original image: **{f'rank {result.original_rank}' if result.original_rank else f'not in top {k}'}**"
        )
    st.markdown(meta, help=result.distance_note)
    st.caption(result.distance_note)
    per_row = 3
    for start in range(0, len(result.hits), per_row):
        cols = st.columns(per_row)
        for rank, (col, hit) in enumerate(zip(cols, result.hits[start : start + per_row]), start + 1):
            with col:
                try:
                    assert backend.data_root is not None  # hits come from a collection, which sets it
                    path = safe_image_path(backend.data_root, backend.settings.split, hit.relpath)
                    st.image(cached_thumbnail(str(path)), width="stretch")
                except BadImage as e:
                    st.caption(f"(image unavailable: {e.reason})")
                # words, not emoji: headless browsers and many Linux desktops lack an emoji font
                mark = {True: ":green[**HIT**] ", False: ":red[miss] ", None: ""}[hit.is_match]
                if original is not None and hit.id == original:
                    mark = ":blue[**ORIGINAL**] " + mark
                # the button right under the image, above the caption whose class name may wrap: every button of a
                # row at the same height
                st.button(
                    "query",
                    key=f"requery_{result.model}_{hit.id}",
                    help=f"query with {hit.relpath}",
                    on_click=requery,
                    args=(hit.id,),
                )
                what = hit.class_name if hit.class_id else Path(hit.relpath).name
                st.caption(f"**{rank}.** {mark}{what}  \nd² = {hit.distance:.4g}")  # ranks compare


def load_models(backend: Backend, models) -> None:
    """Load each model once per app process, with a spinner and one line, so query latency is the query's own."""
    for model in models:
        if model not in backend.collections or backend.has_embedder(model):
            continue
        with st.spinner(f"Loading {model_title(model)} (once; later queries reuse it)…"):
            seconds = backend.load_embedder(model)
        if seconds is not None:
            st.toast(f"{model_title(model)} loaded in {seconds:.1f} s (not part of its query latency)")


def search_scope(comparison: Comparison) -> SearchScope | None:
    """The images each column searches: by default those every shown column holds, so that columns built to
    different sizes answer from the same images; the sidebar can let each search its whole collection."""
    scope = comparison.scope
    if scope is None:
        return None
    whole = st.sidebar.toggle(
        "Search each whole collection",
        False,
        key="search_whole",
        help=f"Off: every column searches only the {len(scope):,} images all of them hold (like for like). "
        f"On: each searches all of its own images, so a larger collection has more candidates.",
    )
    return None if whole else scope


def show_differences(comparison: Comparison, scope: SearchScope | None) -> None:
    """Under the title: which shown collections hold different images, what each column searches, and the
    builds that make them alike."""
    if not comparison.differs:
        return
    if scope is not None:
        searched = f"Every column searches only those {len(scope):,} images, so their results compare like for like."
    elif comparison.scope is not None:
        searched = (
            "Each column searches its whole collection (sidebar: Search each whole collection): "
            "the larger ones have more candidates, so their results and P@k are not like for like."
        )
    elif not comparison.shared:
        searched = "No image is in every column, so each searches its whole collection."
    else:
        searched = ""
    st.warning("Not like for like: " + " ".join(comparison.lines + [searched, comparison.remedy]).replace("  ", " "))
    if comparison.commands:
        st.code("\n".join(comparison.commands), language="bash", wrap_lines=True)


def show_new_columns(backend: Backend, changes) -> None:
    """A collection indexed while the page was open joins the chosen columns: the notice says the page shows it."""
    new = [c.model for c in changes if c.before is None and c.after is not None and c.model in backend.collections]
    if new and "models" in st.session_state:
        st.session_state["models"] = list(dict.fromkeys([*st.session_state["models"], *new]))


def descriptors_note(results) -> None:
    """Columns that search collections of different descriptors compare model and descriptor together: say so."""
    if len({r.descriptor for r in results if r.descriptor}) > 1:
        st.info(
            "The columns use different descriptors ("
            + ", ".join(f"{r.title}: {r.descriptor}" for r in results if r.descriptor)
            + "): a difference between them is the model's and the descriptor's together."
        )


def main() -> None:
    settings = AppSettings.from_argv(sys.argv[1:])
    title = st.empty()  # named after the columns once they are known
    title.title("Backbone retrieval")
    try:
        backend = backend_for(settings)
    except DatabaseLocked:
        show_locked(settings)
        return
    except StoreError as e:
        st.error(f"Cannot open the vector store: {e}")
        return
    backend = choose_data_set(backend, lambda root: backend_for(dataclasses.replace(settings, data_root=root)))
    if st.sidebar.button("Reload collections", key="reload"):
        backend.refresh()
    show_new_columns(backend, show_collection_notices(backend))

    k = st.sidebar.slider("Top k", 5, 50, 9, key="k")
    chosen = st.sidebar.multiselect(
        "Models",
        backend.model_choices(),
        key="models",
        format_func=model_title,
        default=backend.default_models(settings.extra_models),
    )
    models = [m for m in backend.model_choices() if m in chosen]  # the blog's order, whatever the clicks
    title.title("Backbone retrieval: " + (" vs ".join(model_title(m) for m in models) or "no model chosen"))
    if left_out := backend.left_out(models):
        st.caption("Not shown (add them in the sidebar): " + " · ".join(left_out))
    st.sidebar.caption(
        f"Database: {backend.store.describe_target()} · split `{settings.split}` · "
        f"data root `{backend.data_root or 'unknown'}`"
    )

    if not backend.collections:
        st.warning(
            f"No collections for split '{settings.split}' in {backend.store.describe_target()} yet. "
            f"Index the README's quick start (Tiny-ImageNet, found in ../shared/datasets or downloaded once), "
            f"or your own images with --data-root DIR instead of --dataset:"
        )
        st.code(
            str(BuildCommand("all", settings.split, dataset="tiny-imagenet", limit=1000, uri=settings.uri)),
            language="bash",
            wrap_lines=True,
        )
        return
    if not models:
        st.info("No model chosen: pick one or more in the sidebar's **Models** box to see their results side by side.")
        return

    comparison = backend.compare(models)
    scope = search_scope(comparison)
    show_differences(comparison, scope)
    if "query_id" in st.query_params:  # hook for app/views/evaluation.py: ?query_id=N opens that indexed image
        asked = st.query_params["query_id"]
        if asked.isdigit() and comparison.image(int(asked)) is not None:
            requery(int(asked))
        else:
            st.warning(f"No shown collection holds an image at position {asked}: showing the sidebar's query.")
        del st.query_params["query_id"]
    query = pick_query(backend, comparison)
    if query is None:
        return
    query = transform_control(query)

    if query.indexed_id is None:  # an upload must be embedded: load the models first, outside the latency
        load_models(backend, models)
    left, right = st.columns([1, 3])
    results = backend.search_all(models, query, k, scope)
    with left:
        st.image(query.image, caption=query.label, width="stretch")
    with right:
        st.markdown(f"**Query:** `{query.label}`")
        if query.class_id:
            st.markdown(f"**Class:** {class_name(query.class_id)} (`{query.class_id}`)")
        elif not comparison.labelled:
            st.markdown("**Labels:** none (unlabelled data set): no hit/miss marks or P@k")
        else:
            st.markdown("**Class:** unknown (uploaded image): no hit/miss marks")
        scores = [f"{r.title}: **{r.precision_text}**" for r in results if r.precision is not None]
        if scores:
            st.markdown(
                f"Precision@{k} for this query: " + " · ".join(scores),
                help="best possible: the other images of the query's class in that collection, at most k, "
                "divided by k (with about 5 images a class, P@9 cannot pass 0.44)",
            )

        descriptors_note(results)

    with right:
        export_buttons(query, results, k)
    for col, result in zip(st.columns(len(results)), results):
        with col:
            show_column(backend, result, k, query.original_id)
    scroll_to_top()


main()
