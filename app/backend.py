"""Everything the app does that is not drawing: settings, queries, safe file access.

Kept free of Streamlit so that it can be tested directly and reused.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from app.comparison import CollectionImages, Comparison, IndexedImage, SearchScope, build_command
from embed.common.cli_args import model_names
from embed.common.descriptor import Descriptor
from embed.common.settings import DEFAULTS, RetrievalSettings
from embed.models.catalog import BLOG_MODELS, REGISTRY
from embed.sources.datasets import class_name
from embed.sources.imaging import BadImage, load_rgb, read_bytes_capped
from indexer.build_command import BuildCommand
from indexer.catalog import IndexedCollection, collection_descriptor_label, incomplete_problem, indexed_collections
from indexer.index_spec import IndexSpec
from indexer.milvus_store import StoreError, VectorStore
from indexer.query_embedding import QueryEmbedder

log = logging.getLogger(__name__)

MAX_UPLOAD_MB = 20  # Streamlit's "MB" are MiB (it multiplies by 1024 * 1024)
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
THUMB = 112


@dataclass
class AppSettings:
    uri: str = DEFAULTS.milvus_uri
    data_root: Optional[str] = None
    split: str = DEFAULTS.split
    token: str = DEFAULTS.milvus_token
    extra_models: List[str] = field(default_factory=list)
    report_dir: str = DEFAULTS.report_dir  # where the Evaluation and Maps pages read reports and maps
    # model -> descriptor name (embed.common.descriptor) of the collection its column searches; a model not
    # named here searches the collection of its own pooling
    descriptors: Dict[str, str] = field(default_factory=dict)
    # the RETRIEVAL_* settings from_argv read, passed to the store and the query models (None: the store reads them)
    retrieval: Optional[RetrievalSettings] = None

    def descriptor_key(self, model: str) -> str:
        """The ``Descriptor.key_part`` of the collection ``model``'s column searches."""
        spec = REGISTRY.get(model)
        return Descriptor.parse(self.descriptors.get(model, "default")).key_part(
            spec.default_pooling if spec else "avg"
        )

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> "AppSettings":
        """``streamlit run app/main.py -- --uri ... --data-root ... --split ... --report-dir ...``, env vars as
        defaults (``--report-dir``: env RETRIEVAL_REPORT_DIR, else data/report): the page's one reading of the
        environment, kept as ``retrieval`` for the store and the query models."""
        p = argparse.ArgumentParser(prog="streamlit run app/main.py --", add_help=False)
        env = RetrievalSettings.from_environment()
        p.add_argument("--uri", default=env.milvus_uri)
        p.add_argument("--data-root", default=env.data_root_from_env)
        p.add_argument("--split", default=env.split)
        p.add_argument("--images", default=None)  # a folder given to `indexer build --images`: root and split
        p.add_argument("--token", default=env.milvus_token)
        p.add_argument("--report-dir", default=env.report_dir)
        p.add_argument(
            "--extra-models",
            default=env.extra_models,
            help="comma-separated models to show besides the default ones (every model with real weights)",
        )
        p.add_argument(
            "--descriptors",
            default="",
            help="MODEL=DESCRIPTOR,...: the descriptor whose collection a model's column searches, e.g. "
            "effnet-lite2=gem3-white512 (built with `indexer build --descriptor`); default: each model's own pooling",
        )
        args, _ = p.parse_known_args(list(argv))
        extras = model_names(args.extra_models)
        if args.images:
            from embed.sources.datasets import image_folder

            folder = image_folder(args.images)
            args.data_root, args.split = str(folder.parent), folder.name
        descriptors = {}
        for part in model_names(args.descriptors):
            model, _, name = part.partition("=")
            descriptors[model.strip()] = Descriptor.parse(name.strip()).name
        return cls(args.uri, args.data_root, args.split, args.token, extras, args.report_dir, descriptors, env)


@dataclass
class Hit:
    id: int
    class_id: str
    class_name: str
    relpath: str
    distance: float
    is_match: Optional[bool]


@dataclass
class ColumnResult:
    model: str
    title: str
    collection: Optional[str]
    weights: str = ""
    random_weights: bool = False
    latency_ms: float = 0.0
    hits: List[Hit] = field(default_factory=list)
    precision: Optional[float] = None
    best_precision: Optional[float] = None  # the highest P@k this collection allows for the query's class
    problem: Optional[str] = None  # why this column has no results
    build_command: Optional[str] = None
    distance_note: str = ""  # what d² means here, and what it does not
    original_rank: Optional[int] = None  # where the query's untransformed original landed (None: not in the top k)
    incomplete: str = ""  # the collection's last build did not finish: what it lacks and the build that completes it
    embed_ms: float = 0.0  # the part of latency_ms spent embedding the query (0: an indexed image's stored vector)

    @property
    def latency_text(self) -> str:
        """'1234 ms (embedding the query: 1190 ms)': how much of the latency is the model, how much the search."""
        if not self.embed_ms:
            return f"{self.latency_ms:.0f} ms (stored vector)"
        return f"{self.latency_ms:.0f} ms (embedding the query: {self.embed_ms:.0f} ms)"

    descriptor: str = ""  # the collection's descriptor (e.g. avg, gem3-white512), said in the column

    @property
    def precision_text(self) -> str:
        """'0.22 (best possible 0.44)': the value beside the ceiling the collection sets for this query."""
        if self.precision is None:
            return ""
        ceiling = "" if self.best_precision is None else f" (best possible {self.best_precision:.2f})"
        return f"{self.precision:.2f}{ceiling}"


@dataclass
class Query:
    """What the user asked with: an indexed image (by id) or an uploaded image."""

    image: Image.Image
    class_id: Optional[str]
    indexed_id: Optional[int] = None
    label: str = ""
    original_id: Optional[int] = None  # a transformed indexed image: the id of its untransformed original

    @property
    def indexed_image(self) -> Optional[IndexedImage]:
        """The indexed image this query is, or None for an upload."""
        if self.indexed_id is None:
            return None
        return IndexedImage(self.indexed_id, self.class_id or "", self.label)


@dataclass(frozen=True)
class DataSet:
    """One data set indexed for the app's split: its name (the data root's folder name, as the CLI's --data-root
    chooses it), the folder its collections were built from, and the models indexed on it."""

    name: str
    data_root: str
    models: Tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.name} ({len(self.models)} model{'s' if len(self.models) != 1 else ''})"


def data_sets(colls: Sequence[IndexedCollection]) -> List[DataSet]:
    """The data sets ``colls`` are indexed on, the one with the most models first (then by name), as the CLI's
    suggestions choose among them."""
    by_name: Dict[str, List[IndexedCollection]] = {}
    for c in colls:
        by_name.setdefault(c.meta.dataset, []).append(c)
    sets = [
        DataSet(name, cs[0].meta.data_root, tuple(sorted(c.meta.model for c in cs))) for name, cs in by_name.items()
    ]
    return sorted(sets, key=lambda d: (-len(d.models), d.name))


@dataclass(frozen=True)
class CollectionChange:
    """A collection that a build (or a drop) changed while the app had it open."""

    title: str
    before: Optional[int]  # rows its last build wrote, as the app read them; None: it was not indexed
    after: Optional[int]  # None: it is gone
    complete: bool = True  # False: a build is writing it now, or its last build did not finish
    model: str = ""

    @property
    def text(self) -> str:
        if self.after is None:
            return f"{self.title}'s collection was dropped."
        what = (
            f"was indexed ({self.after:,} images)"
            if self.before is None
            else f"changed ({self.before:,} → {self.after:,} images)"
        )
        unfinished = "" if self.complete else " Its build has not finished: the column may change again."
        return f"{self.title}'s collection {what} since this page last read it; the page now shows it as it is.{unfinished}"


def comparison_rows(query: "Query", results: Sequence[ColumnResult], k: int) -> List[Dict]:
    """One row per model and rank, the query's columns side by side as a table (the page's CSV/JSON export)."""
    rows = []
    for r in results:
        for rank, h in enumerate(r.hits, 1):
            rows.append(
                {
                    "query": query.label,
                    "query_id": query.indexed_id,
                    "query_class": query.class_id,
                    "model": r.model,
                    "collection": r.collection,
                    "weights": r.weights,
                    "k": k,
                    "rank": rank,
                    "id": h.id,
                    "relpath": h.relpath,
                    "class_id": h.class_id,
                    "class_name": h.class_name,
                    "squared_l2": h.distance,
                    "hit": h.is_match,
                    "precision_at_k": r.precision,
                    "best_possible_precision_at_k": r.best_precision,
                    "latency_ms": round(r.latency_ms, 1),
                    "embed_ms": round(r.embed_ms, 1),
                }
            )
    return rows


def comparison_csv(rows: Sequence[Dict]) -> str:
    import csv
    import io

    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def model_title(model: str) -> str:
    spec = REGISTRY.get(model)
    return spec.title if spec else model


def distance_note(title: str, dim: int, index: Optional[IndexSpec] = None) -> str:
    """The column's caption: what its distances are, and through which index they were found."""
    index = index or IndexSpec()
    searched = (
        "FLAT index: exact"
        if index.exact
        else f"{index.label} index searched with {index.search_params()}: APPROXIMATE on a server (Milvus Lite "
        f"searches exactly); `indexer ann` measures what it costs"
    )
    return (
        f"d²: squared L2 distance in {title}'s own {dim}-d feature space ({searched}). Each model has its own "
        f"scale: compare ranks across columns, not values."
    )


def safe_image_path(data_root: str, split: str, relpath: str) -> Path:
    """The file for a stored relative path, only if it really lies inside the split folder.

    Stored paths are data: '../../etc/passwd', absolute paths and symlinks leading out are refused.
    """
    base = (Path(data_root) / split).resolve()
    if not relpath or "\x00" in relpath or Path(relpath).is_absolute():
        raise BadImage(f"refused path {relpath!r}")
    target = (base / relpath).resolve()
    if base not in target.parents:
        raise BadImage(f"refused path {relpath!r}: outside the indexed data root")
    return target


def load_upload(data: bytes) -> Image.Image:
    if len(data) > MAX_UPLOAD_BYTES:
        raise BadImage(f"file too large ({len(data):,} bytes; the limit is {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB)")
    return load_rgb(data)  # the pixel limit and its message are those of every image (embed.sources.imaging)


def thumbnail(path: Path, size: int = THUMB) -> Image.Image:
    image = load_rgb(read_bytes_capped(path, MAX_UPLOAD_BYTES * 5))
    image.thumbnail((size, size))
    return image


class Backend:
    """One per process: the Milvus connection, collections, and one embedder per model."""

    # The app reads collections that a build finished earlier: on a Milvus server, Strong consistency would
    # make every search wait for the next time tick (~200 ms, benchmarks/README.md "scale"); Lite ignores it.
    search_consistency = "Bounded"

    def __init__(self, settings: AppSettings):
        from embed.extraction import host_memory

        self.settings = settings
        self.store = VectorStore(settings.uri, settings.token, settings=settings.retrieval)
        host_memory.apply_settings(self.store.settings)  # before an upload's query model first runs on the CPU
        self._embedders: Dict[str, QueryEmbedder] = {}
        self._images: Dict[str, CollectionImages] = {}  # by collection name, read once (no vectors)
        self.collections: Dict[str, IndexedCollection] = {}
        self.root_from_collections = False  # no --data-root: the collections' own
        self.data_sets: List[DataSet] = []  # every data set indexed for the split; the page shows one
        self.dataset: Optional[str] = None  # the one shown
        self.unmatched_root = False  # --data-root names none of several indexed data sets
        # the app's sessions share this backend: each change is numbered, and each session shows those it has not
        self.generation = 0
        self._history: List[Tuple[int, CollectionChange]] = []
        self._lock = threading.Lock()
        self._adopt(self._current())

    def refresh(self) -> List[CollectionChange]:
        """Re-read the collections now, whether or not their metadata changed; the changes found, as ``changes``."""
        return self._reread(force=True)

    def changes(self) -> List[CollectionChange]:
        """The collections that changed since they were read (a build ran meanwhile), re-read if any did.

        A page calls this on every run: reading the collections' metadata takes milliseconds, and a column
        must never search rows the page's positions, classes and ceilings do not know of.
        """
        return self._reread(force=False)

    def changes_since(self, seen: int) -> Tuple[int, List[CollectionChange]]:
        """(this backend's generation, the changes after generation ``seen``): what a session that last looked at
        ``seen`` has not been told, another session's run having perhaps re-read the collections first."""
        self.changes()
        return self.generation, [change for g, change in self._history if g > seen]

    def _reread(self, force: bool) -> List[CollectionChange]:
        with self._lock:
            now = self._current()
            changed = self._differences(now)
            if changed or force:
                self._adopt(now)
            if changed:
                self.generation += 1
                self._history += [(self.generation, change) for change in changed]
            return changed

    def _differences(self, now: List[IndexedCollection]) -> List[CollectionChange]:
        before = {m: c.meta for m, c in self.collections.items()}
        after = {c.meta.model: c.meta for c in now}
        changed = [
            CollectionChange(
                model_title(m),
                before[m].rows if m in before else None,
                after[m].rows if m in after else None,
                after[m].complete if m in after else True,
                m,
            )
            for m in sorted(set(before) | set(after))
            if m not in before or m not in after or before[m].to_json() != after[m].to_json()
        ]
        return changed

    def _current(self) -> List[IndexedCollection]:
        """The collections of one data set: --data-root's (by its folder name, as the CLI chooses), else the one
        with the most models; ``data_sets`` says which others there are, so that the page can offer them."""
        colls = [
            c
            for c in indexed_collections(self.store)
            if c.meta.key.matches(split=self.settings.split)
            and c.meta.key.descriptor == self.settings.descriptor_key(c.meta.model)
        ]
        self.data_sets = data_sets(colls)
        names = [d.name for d in self.data_sets]
        if self.dataset not in names:  # chosen once; a re-read keeps it while it is indexed
            wanted = Path(self.settings.data_root).expanduser().resolve().name if self.settings.data_root else None
            # a --data-root naming no indexed data set is the one folder they moved to, when there is one
            self.unmatched_root = wanted is not None and wanted not in names and len(names) > 1
            self.dataset = wanted if wanted in names else (names[0] if names else None)
        return [c for c in colls if c.meta.dataset == self.dataset]

    def several_data_sets(self) -> Optional[str]:
        """A line saying that several data sets are indexed for the split and which one the page shows, or None."""
        if len(self.data_sets) < 2:
            return None
        listed = ", ".join(d.label for d in self.data_sets)
        unmatched = f"--data-root {self.settings.data_root} names none of them. " if self.unmatched_root else ""
        return (
            f"Split '{self.settings.split}' is indexed for {len(self.data_sets)} data sets: {listed}. {unmatched}"
            f"This page shows {self.dataset}: choose another in the sidebar's **Data set**, or start the app with "
            f"--data-root DIR (as the CLI's commands choose one)."
        )

    def _adopt(self, colls: List[IndexedCollection]) -> None:
        self.collections = {c.meta.model: c for c in colls}
        self._images.clear()
        if (not self.settings.data_root or self.unmatched_root) and colls:
            self.settings.data_root = colls[0].meta.data_root
            self.root_from_collections = True

    @property
    def data_root(self) -> Optional[str]:
        return self.settings.data_root

    def data_root_problem(self) -> Optional[str]:
        """Why no indexed image can be shown (the data root lacks the split's folder), or None."""
        root = self.settings.data_root
        if not root or not self.collections:
            return None
        folder = Path(root).expanduser() / self.settings.split
        if folder.is_dir():
            return None
        split = self.settings.split
        if self.root_from_collections:
            return (
                f"The collections were built from images in {root}, which has no '{split}' folder here ({folder} "
                f"does not exist), so no indexed image can be shown (uploads still work). Pass --data-root with "
                f"the folder that holds {split}/ now."
            )
        indexed = ", ".join(sorted({c.meta.data_root for c in self.collections.values()}))
        return (
            f"The data root {root} has no '{split}' folder ({folder} does not exist), so no indexed image can be "
            f"shown (uploads still work). The collections were built from {indexed}: start the app without "
            f"--data-root to use it, or pass the folder that holds {split}/ now."
        )

    def available_models(self) -> List[str]:
        return sorted(self.collections)

    def extra_models(self) -> List[str]:
        return [m for m in self.available_models() if m not in BLOG_MODELS]

    def model_choices(self) -> List[str]:
        """What the page can show: the blog's three (indexed or not), then every other indexed model."""
        return list(BLOG_MODELS) + self.extra_models()

    def default_models(self, requested: Sequence[str] = ()) -> List[str]:
        """The columns a page opens on: every indexed model with real weights, the blog's three first, plus the
        ``requested`` ones; when no model has real weights, the blog's three (their columns say why)."""
        real = [m for m in self.model_choices() if m in self.collections and not self.collections[m].meta.is_random]
        wanted = set(real or BLOG_MODELS) | {m for m in requested if m in self.model_choices()}
        return [m for m in self.model_choices() if m in wanted]

    def left_out(self, shown: Sequence[str]) -> List[str]:
        """One line for each blog model not shown: why, so that a first-time user knows where the three went."""
        lines = []
        for m in BLOG_MODELS:
            if m in shown:
                continue
            why = (
                "RANDOM weights (its real weights need internet once, or --checkpoint)"
                if m in self.collections
                else "not indexed"
            )
            lines.append(f"{model_title(m)}: {why}")
        return lines

    def images(self, model: str) -> Optional[CollectionImages]:
        """What ``model``'s collection holds (ids, classes, paths), read once per collection; None if not indexed."""
        coll = self.collections.get(model)
        if coll is None:
            return None
        held = self._images.get(coll.name)
        if held is None:
            rows = (r for batch in self.store.iter_rows(coll.name, with_vectors=False) for r in batch)
            held = self._images[coll.name] = CollectionImages.from_rows(model, model_title(model), coll.meta, rows)
        return held

    def labelled(self) -> bool:
        """Whether the indexed images carry labels (two or more classes, in every collection): else every page says
        the data set is unlabelled and shows no P@k, hit/miss marks or class filter."""
        # an empty collection (its build interrupted before its first row) holds no label to judge by, as in compare()
        held = [h for m in self.collections if (h := self.images(m)) is not None and h.images]
        return bool(held) and all(h.labelled for h in held)

    def labels_notice(self) -> Optional[str]:
        """The line every page shows for an unlabelled data set; None when it is labelled."""
        if not self.collections or self.labelled():
            return None
        held = self.images(next(iter(self.collections)))
        how = held.labels_text if held is not None else "unlabelled"
        what = how if how.startswith("unlabelled") else f"unlabelled ({how})"
        return (
            f"This data set is {what}: no precision figures, hit/miss marks or class filters; "
            f"compare the models by their agreement, near-duplicates and the label-free report "
            f"(python -m indexer evaluate --report DIR)."
        )

    def compare(self, models: Sequence[str]) -> Comparison:
        """The images every shown, indexed column holds, and how their collections differ. An empty collection (its
        build was interrupted before its first row) has no say: its column reports itself."""
        return Comparison.of(
            [held for m in models if (held := self.images(m)) is not None and held.images], self.settings.uri
        )

    def missing_build_command(self, model: str) -> Optional[str]:
        """The build that adds ``model`` beside the indexed collections: same data root, same --limit as the
        largest of them, so that its column compares like with like. None when no data root is known."""
        if not self.data_root:
            return None
        limits = [held.limit for m in self.collections if (held := self.images(m)) is not None]
        limit = max(limits) if limits else None
        built = next(iter(self.collections.values()), None)
        if built is not None and built.meta.layout == "folder":  # the --images folder, labelled the same way
            folder = str(Path(self.data_root) / self.settings.split)
            options = tuple(built.meta.label_source.options())
            return str(
                BuildCommand(model, None, images=folder, label_options=options, limit=limit, uri=self.settings.uri)
            )
        return str(BuildCommand(model, self.settings.split, self.data_root, limit=limit, uri=self.settings.uri))

    def query_for_row(self, row: Dict) -> Query:
        return self.query_for_image(IndexedImage(int(row["id"]), row["class_id"], row["relpath"]))

    def query_for_image(self, image: IndexedImage) -> Query:
        assert self.data_root is not None  # an indexed image: refresh() took the data root from its collection
        path = safe_image_path(self.data_root, self.settings.split, image.relpath)
        # unlabelled images (or a single class) have no class to mark hits by
        return Query(load_rgb(path), image.class_id if self.labelled() else None, image.id, image.relpath)

    def embedder(self, model: str) -> QueryEmbedder:
        """``model``'s query embedder for its collection as it is now: loaded again after a rebuild that changed how
        the rows were made (weights, decode, precision, ...), never one that embeds differently from them."""
        meta = self.collections[model].meta
        query = self._embedders.get(model)
        if query is None or not query.serves(meta):
            query = self._embedders[model] = QueryEmbedder.for_collection(meta, settings=self.store.settings)
        return query

    def has_embedder(self, model: str) -> bool:
        """Whether ``model``'s query embedder is loaded and still serves its collection as it is now."""
        query = self._embedders.get(model)
        return query is not None and model in self.collections and query.serves(self.collections[model].meta)

    def load_embedder(self, model: str) -> Optional[float]:
        """Load ``model``'s query embedder now if it is not loaded: seconds taken, or None if it already was.

        Loading (weights, first forward) takes seconds; the app shows it once, apart from query latency.
        A failure is left for ``search`` to report in the model's column.
        """
        if model not in self.collections or self.has_embedder(model):
            return None
        t = time.perf_counter()
        try:
            self.embedder(model)
        except (StoreError, BadImage):
            return None
        return time.perf_counter() - t

    def query_vector(self, model: str, query: Query) -> np.ndarray:
        """The stored vector for an indexed image (no model needed), else the image embedded now."""
        coll = self.collections[model]
        if query.indexed_id is not None:
            rows = self.store.get_rows(
                coll.name, [query.indexed_id], fields=["vector"], consistency=self.search_consistency
            )
            if rows:
                return np.asarray(rows[0]["vector"], dtype=np.float32)[None, :]
        return self.embedder(model).embed([query.image])

    def search(
        self,
        model: str,
        query: Query,
        k: int,
        vector: Optional[np.ndarray] = None,
        embed_ms: float = 0.0,
        scope: Optional[SearchScope] = None,
    ) -> ColumnResult:
        """One column's result. ``vector``: the query already embedded for this model, which took ``embed_ms``
        (uploads, see search_all): the latency shown is the query's own, embedding included. ``scope``: the
        images to search instead of the whole collection (those every shown column holds)."""
        title = model_title(model)
        coll = self.collections.get(model)
        if coll is None:
            return ColumnResult(
                model,
                title,
                None,
                problem=f"{title} is not indexed for split '{self.settings.split}'.",
                build_command=self.missing_build_command(model),
            )
        meta = coll.meta
        weights = (
            "RANDOM weights: results are meaningless"
            if meta.is_random
            else f"{meta.identity.weights_source} weights ({meta.identity.weights_fingerprint[:19]})"
        )
        everything = self.images(model)
        incomplete = incomplete_problem(coll, len(everything.images) if everything else 0, self.settings.uri)
        if incomplete and everything is not None and not everything.images:
            return ColumnResult(model, title, coll.name, weights, meta.is_random, problem=incomplete)
        wanted = query.indexed_image
        held = everything if wanted is not None else None
        if held is not None and wanted is not None and not held.holds(wanted):
            # another collection's image: a search here would compare this column on a different footing
            return ColumnResult(
                model,
                title,
                coll.name,
                weights,
                meta.is_random,
                problem=f"{wanted.relpath} (position {wanted.id}) is not in {title}'s collection "
                f"({len(held.images):,} images): not searched, so that every column answers the same query.",
                build_command=build_command(meta, self.settings.uri, limit=max(held.limit, wanted.id + 1)),
            )
        try:
            t = time.perf_counter()
            vec = vector if vector is not None else self.query_vector(model, query)
            if vector is None and query.indexed_id is None:  # embedded just now, here
                embed_ms = (time.perf_counter() - t) * 1000
            exclude = [query.indexed_id] if query.indexed_id is not None else None
            rows = self.store.search(
                coll.name,
                vec,
                k=k,
                exclude_self_ids=exclude,
                consistency=self.search_consistency,
                within=None if scope is None else scope.ids,
                params=meta.index.search_params(k=k),
            )[0]
            latency = (time.perf_counter() - t) * 1000 + embed_ms
        except (StoreError, BadImage) as e:
            return ColumnResult(model, title, coll.name, weights, meta.is_random, problem=str(e))
        hits = [
            Hit(
                r["id"],
                r["class_id"],
                class_name(r["class_id"]),
                r["relpath"],
                r["distance"],
                None if query.class_id is None else r["class_id"] == query.class_id,
            )
            for r in rows
        ]
        precision = best = None
        if query.class_id is not None and hits:
            precision = sum(bool(h.is_match) for h in hits) / len(hits)
            images = self.images(model)
            assert images is not None  # coll is not None: the model is indexed
            best = images.best_precision(query.class_id, wanted, len(hits), scope)
        original_rank = next((i + 1 for i, h in enumerate(hits) if h.id == query.original_id), None)
        return ColumnResult(
            model,
            title,
            coll.name,
            weights,
            meta.is_random,
            latency,
            hits,
            precision,
            best,
            distance_note=distance_note(title, meta.dim, meta.index),
            original_rank=original_rank,
            incomplete=incomplete,
            embed_ms=embed_ms,
            descriptor=collection_descriptor_label(meta),
        )

    def search_all(
        self, models: Sequence[str], query: Query, k: int, scope: Optional[SearchScope] = None
    ) -> List[ColumnResult]:
        """Every column's result for one query, in the order of ``models``, the searches running concurrently,
        each within ``scope`` where one is given.

        The columns' searches are independent and mostly wait (on a server) or run NumPy that releases the
        GIL (Milvus Lite), so three of them at once take about as long as the slowest. An uploaded image is
        embedded first, one model after another: each forward pass already uses every core. A column that
        fails shows its problem; the others are unaffected.
        """
        vectors = {m: self._upload_vector(m, query) for m in models}
        if len(models) <= 1:
            return [self._column(m, query, k, *vectors[m], scope) for m in models]
        with ThreadPoolExecutor(max_workers=len(models), thread_name_prefix="column-search") as pool:
            futures = [pool.submit(self._column, m, query, k, *vectors[m], scope) for m in models]
            return [f.result() for f in futures]

    def _upload_vector(self, model: str, query: Query) -> Tuple[Optional[np.ndarray], float]:
        """(the embedded upload for ``model``, ms it took); None where search() should find (or report) the vector."""
        if query.indexed_id is not None or model not in self.collections:
            return None, 0.0
        t = time.perf_counter()
        try:
            return self.query_vector(model, query), (time.perf_counter() - t) * 1000
        except Exception:  # search() embeds again and reports the problem in this column
            return None, 0.0

    def _column(
        self,
        model: str,
        query: Query,
        k: int,
        vector: Optional[np.ndarray],
        embed_ms: float,
        scope: Optional[SearchScope],
    ) -> ColumnResult:
        try:
            return self.search(model, query, k, vector, embed_ms, scope)
        except Exception as e:  # an unexpected failure in one column must not blank the page
            log.exception("search in %s failed", model)
            return ColumnResult(model, model_title(model), None, problem=f"search failed: {type(e).__name__}: {e}")
