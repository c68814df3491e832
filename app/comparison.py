"""Like for like: which images the shown columns have in common, and what to say when their collections differ.

Every column answers the same query against its own collection. That compares the models only when the
collections hold the same images: built from the same list of files (the identity's data fingerprint) and
with the same ``--limit``. This module reads what each collection holds (ids, classes, paths: no vectors),
finds the images they all hold, and words the differences with the build commands that remove them.
Streamlit-free and store-free: ``app.backend`` feeds it rows.
"""

from __future__ import annotations

import shlex
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import Collection, Dict, Iterable, List, Mapping, Optional, Sequence

from indexer.catalog import build_command  # noqa: F401  (the pages and tests take it from here too)
from indexer.milvus_store import CollectionMeta


@dataclass(frozen=True)
class IndexedImage:
    """One row of a collection, without its vector: the image's canonical position (its id), class and path."""

    id: int
    class_id: str
    relpath: str


@dataclass
class CollectionImages:
    """The images one model's collection holds."""

    model: str
    title: str
    meta: CollectionMeta
    images: Dict[int, IndexedImage]
    class_counts: Counter = field(default_factory=Counter)

    @classmethod
    def from_rows(cls, model: str, title: str, meta: CollectionMeta, rows: Iterable[Mapping]) -> "CollectionImages":
        images = {int(r["id"]): IndexedImage(int(r["id"]), r["class_id"], r["relpath"]) for r in rows}
        return cls(model, title, meta, images, Counter(im.class_id for im in images.values()))

    @cached_property
    def labelled(self) -> bool:
        """Whether its images carry labels that can be evaluated (two or more classes, every image labelled)."""
        from embed.sources.datasets import labelled

        return labelled([im.class_id for im in self.images.values()])

    @property
    def labels_text(self) -> str:
        return self.meta.labels_text([im.class_id for im in self.images.values()])

    def holds(self, image: IndexedImage) -> bool:
        """Whether this collection holds that very image (same id and same file). Its label is not compared: a
        query from an unlabelled data set (or one of a single class) carries none."""
        held = self.images.get(image.id)
        return held is not None and held.relpath == image.relpath

    @property
    def limit(self) -> int:
        """The ``--limit`` that builds exactly these ids: one past the last position."""
        return max(self.images, default=-1) + 1

    def best_precision(
        self, class_id: str, query: Optional[IndexedImage], k: int, scope: Optional["SearchScope"] = None
    ) -> Optional[float]:
        """The highest P@k any model can reach here for a query of ``class_id``: the other images of its class
        that the search may return (the collection's, or those of ``scope``; the query itself excluded), capped
        at k."""
        if k <= 0:
            return None
        counts, searched = (self.class_counts, self.images) if scope is None else (scope.class_counts, scope.ids)
        own = query is not None and self.holds(query) and query.id in searched
        others = counts.get(class_id, 0) - (1 if own else 0)
        return min(k, max(others, 0)) / k


@dataclass(frozen=True)
class SearchScope:
    """The images every shown column holds, searched in each column instead of its whole collection, so that
    columns built to different sizes answer from the same images."""

    ids: Collection[int]  # a range where they are the first positions (different --limit), else a set
    class_counts: Counter

    @classmethod
    def of(cls, shared: Sequence[IndexedImage]) -> "SearchScope":
        ids = sorted(im.id for im in shared)
        prefix = bool(ids) and ids[-1] - ids[0] + 1 == len(ids)
        held: Collection[int] = range(ids[0], ids[-1] + 1) if prefix else frozenset(ids)
        return cls(held, Counter(im.class_id for im in shared))

    def __len__(self) -> int:
        return len(self.ids)


def _names(columns: Sequence[CollectionImages]) -> str:
    titles = [c.title for c in columns]
    return titles[0] if len(titles) == 1 else ", ".join(titles[:-1]) + " and " + titles[-1]


@dataclass
class Comparison:
    """What the shown (indexed) columns have in common, and how they differ."""

    columns: List[CollectionImages]
    shared: List[IndexedImage]  # held by every column, by id
    lines: List[str] = field(default_factory=list)  # each difference in a sentence
    remedy: str = ""  # what the commands do, leading to them
    commands: List[str] = field(default_factory=list)  # the builds that remove them

    @cached_property
    def scope(self) -> Optional[SearchScope]:
        """What each column should search to compare like for like: the shared images, where the columns hold
        others too; None where every column holds the same images (its whole collection is the scope)."""
        if not self.shared or all(len(c.images) == len(self.shared) for c in self.columns):
            return None
        return SearchScope.of(self.shared)

    @classmethod
    def of(cls, columns: Sequence[CollectionImages], uri: str) -> "Comparison":
        columns = list(columns)
        if not columns:
            return cls([], [])
        shared_ids = set(columns[0].images)
        for c in columns[1:]:
            shared_ids &= {i for i, im in c.images.items() if columns[0].images.get(i) == im}
        shared = [columns[0].images[i] for i in sorted(shared_ids)]
        comparison = cls(columns, shared)
        comparison._explain(uri)
        return comparison

    @property
    def differs(self) -> bool:
        return bool(self.lines)

    @property
    def labelled(self) -> bool:
        """Whether hits can be marked and P@k given: every shown column's images are labelled."""
        return bool(self.columns) and all(c.labelled for c in self.columns)

    def image(self, image_id: int) -> Optional[IndexedImage]:
        """The image with this id in the first column that holds one (a clicked hit may be in one column only)."""
        for c in self.columns:
            if image_id in c.images:
                return c.images[image_id]
        return None

    def lacking(self, image: IndexedImage) -> List[CollectionImages]:
        return [c for c in self.columns if not c.holds(image)]

    def _explain(self, uri: str) -> None:
        datasets: Dict[str, List[CollectionImages]] = {}
        for c in self.columns:
            datasets.setdefault(c.meta.dataset, []).append(c)
        if len(datasets) > 1:
            self.lines.append(
                "The columns index different datasets ("
                + "; ".join(f"{_names(cs)}: {name}" for name, cs in datasets.items())
                + "): the same position is a different image in each, so only images with the same path are "
                "compared."
            )
            self.remedy = "Open the app on one dataset:"
            self.commands += [
                f"streamlit run app/main.py -- --data-root {shlex.quote(cs[0].meta.data_root)} "
                f"--split {shlex.quote(cs[0].meta.split)} --uri {shlex.quote(uri)}"
                for cs in datasets.values()
            ]
            return
        lists: Dict[str, List[CollectionImages]] = {}
        for c in self.columns:
            lists.setdefault(c.meta.identity.data_fingerprint, []).append(c)
        if len(lists) > 1:
            self.lines.append(
                "The columns were built from different lists of files in the same folder (the data "
                "changed between builds: "
                + "; ".join(f"{_names(cs)}: list {fp[:8]}" for fp, cs in lists.items())
                + "): a position may name different images."
            )
            self.remedy = "Rebuild them from the files as they are now:"
            self.commands += [build_command(c.meta, uri, force=True) for c in self.columns]
            return
        sizes = Counter(len(c.images) for c in self.columns)
        if len(sizes) > 1 or any(len(self.shared) < len(c.images) for c in self.columns):
            by_size: Dict[int, List[CollectionImages]] = {}
            for c in sorted(self.columns, key=lambda c: -len(c.images)):
                by_size.setdefault(len(c.images), []).append(c)
            held = "; ".join(f"{_names(cs)}: {n:,} images" for n, cs in by_size.items())
            self.lines.append(
                f"The columns hold different images ({held}). Positions, classes and Random use the "
                f"{len(self.shared):,} images every column holds; a column that lacks the query says so."
            )
            self.remedy = "To compare on all of them, build the smaller ones to the same --limit:"
            limit = max(c.limit for c in self.columns)
            self.commands += [build_command(c.meta, uri, limit=limit) for c in self.columns if c.limit < limit]
        self._explain_indexes(uri)

    def _explain_indexes(self, uri: str) -> None:
        """Columns searched through different indexes (one FLAT, one HNSW): an approximate one may miss neighbours
        the exact one finds, so a difference between them is partly the index's."""
        indexes: Dict[str, List[CollectionImages]] = {}
        for c in self.columns:
            indexes.setdefault(c.meta.index.label, []).append(c)
        if len(indexes) < 2:
            return
        self.lines.append(
            "The columns are searched through different indexes ("
            + "; ".join(f"{_names(cs)}: {label}" for label, cs in indexes.items())
            + "): an approximate index may miss neighbours that FLAT finds (`python -m indexer ann` measures how "
            "many)."
        )
        if not self.commands:
            self.remedy = "To compare exact searches, give every collection the FLAT index (only the index is rebuilt):"
            self.commands += [
                build_command(c.meta, uri) + " --index FLAT" for c in self.columns if not c.meta.index.exact
            ]
