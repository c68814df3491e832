"""Which collections this tool made, and finding the one for a model and split (no torch: status, the app's start)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from embed.common.descriptor import Descriptor, descriptor_label
from embed.common.identity import VectorSetIdentity
from embed.common.settings import RetrievalSettings
from indexer.build_command import BuildCommand
from indexer.milvus_store import ANN_SCRATCH_SUFFIX, CollectionMeta, StoreError, VectorStore


@dataclass
class IndexedCollection:
    name: str
    meta: CollectionMeta


def several_datasets(what: str, datasets: Iterable[str]) -> str:
    """The one sentence for a lookup that finds ``what`` indexed for more than one dataset."""
    return (
        f"{what} is indexed for several datasets ({', '.join(sorted(set(datasets)))}): pass --data-root to choose one"
    )


class SeveralDatasets(StoreError):
    """Collections of more than one dataset where one comparison needs one."""


def one_dataset(colls: Sequence[IndexedCollection], split: str) -> Sequence[IndexedCollection]:
    """``colls`` when they were all built from one dataset, else SeveralDatasets naming them."""
    datasets = {c.meta.dataset for c in colls}
    if len(datasets) > 1:
        raise SeveralDatasets(several_datasets(f"split {split!r}", datasets))
    return colls


class CollectionNotFound(StoreError):
    """No collection for a lookup. ``alternatives``: the collections the database does hold for that split (and
    dataset), so that a command can offer itself again on them (``rerun_on``)."""

    def __init__(self, message: str, alternatives: Sequence[IndexedCollection] = ()):
        super().__init__(message)
        self.alternatives = list(alternatives)


def collection_descriptor_label(meta: CollectionMeta) -> str:
    """A collection's descriptor as columns and listings say it: ``avg``, ``cls``, ``gem3-l2``, ``gem3-white512``."""
    return identity_descriptor_label(meta.identity)


def identity_descriptor_label(identity: VectorSetIdentity) -> str:
    """A vector set's descriptor as columns, listings and titles say it (see ``collection_descriptor_label``)."""
    from embed.models.catalog import REGISTRY

    spec = REGISTRY.get(identity.model)
    return descriptor_label(identity.descriptor, identity.normalized, spec.default_pooling if spec else "")


def non_default_descriptor(identity: VectorSetIdentity) -> str:
    """The descriptor a title names: ``""`` for the model's own pooling as it comes (what every title meant before
    descriptors), else its label (``gem3``, ``gem3-l2``, ``avg-l2`` for a --normalize build, ``gem3-white512``)."""
    return identity_descriptor_label(identity) if identity.descriptor or identity.normalized else ""


def descriptor_key(model: str, descriptor: Optional[Descriptor]) -> str:
    """``descriptor`` (None: the model's own pooling) as ``model``'s keys record it (``Descriptor.key_part``)."""
    from embed.models.catalog import get_spec

    return descriptor.key_part(get_spec(model).default_pooling) if descriptor is not None else ""


def _refuse_raw_for_unit_length(found: IndexedCollection, wanted: Optional[Descriptor]) -> IndexedCollection:
    """``found``, unless ``wanted`` asks for unit length and it holds raw vectors (they share a name and a key)."""
    if wanted is not None and wanted.unit_length and not found.meta.normalized:
        raise CollectionNotFound(
            f"{found.name} holds raw vectors, not {wanted.name}: rebuild it with --descriptor {wanted.name}"
        )
    return found


def collections_under(
    store: VectorStore, split: str, dataset: Optional[str] = None, descriptor: Optional[Descriptor] = None
) -> List[IndexedCollection]:
    """Every model's collection of ``split`` (and ``dataset``) under ``descriptor`` (None: each model's own pooling),
    in name order; refused as ``find_collection`` refuses one whose vectors are raw where unit length is asked."""
    return [
        _refuse_raw_for_unit_length(c, descriptor)
        for c in indexed_collections(store)
        if c.meta.key.matches(split=split, dataset=dataset, descriptor=descriptor_key(c.meta.model, descriptor))
    ]


def indexed_collections(store: VectorStore) -> List[IndexedCollection]:
    """Collections made by this tool (they carry our metadata), in name order."""
    out = []
    for name in store.list_collections():
        if name.endswith(ANN_SCRATCH_SUFFIX):  # `indexer ann`'s temporary copy, dropped when it ends
            continue
        try:
            meta = store.meta(name)
        except StoreError:
            continue
        if meta is not None:
            out.append(IndexedCollection(name, meta))
    return out


def build_command(meta: CollectionMeta, uri: str, limit: Optional[int] = None, force: bool = False) -> str:
    """The build command that makes this model's collection again, as it was made, with another ``--limit``.

    Everything that decides its vectors is spelled out (decode, precision, weights, normalisation), so the
    rebuilt collection has the same identity and the build extracts only the images not embedded yet.
    """
    identity = meta.identity
    folder = meta.layout == "folder"  # built with --images: the same folder, labelled the same way
    return str(
        BuildCommand(
            identity.model,
            None if folder else identity.split,
            data_root=None if folder else meta.data_root,
            images=str(Path(meta.data_root) / identity.split) if folder else None,
            label_options=tuple(meta.label_source.options()) if folder else (),
            limit=limit,
            checkpoint=meta.weights_detail if identity.weights_source == "checkpoint" and meta.weights_detail else None,
            random_init=identity.is_random,
            descriptor=identity.descriptor or None,
            whitening=meta.whitening_path or None,
            normalize=identity.normalized and "-white" not in identity.descriptor,
            decode=identity.decode,
            precision=identity.precision,
            force=force,
            uri=uri,
        )
    )


def incomplete_problem(coll: IndexedCollection, live_rows: int, uri: str) -> str:
    """Why a collection cannot be trusted whole (its last build did not finish, or rows went since), with the
    build that completes it; empty when it is complete."""
    meta = coll.meta
    if meta.complete_with(live_rows):
        return ""
    return (
        f"{coll.name} is INCOMPLETE: {live_rows:,} of {meta.rows:,} rows (its last build did not finish, or rows "
        f"were deleted since). Complete it: {build_command(meta, uri, limit=meta.images)}"
    )


def find_collection(
    store: VectorStore, model: str, split: str, dataset: Optional[str] = None, descriptor: Optional[Descriptor] = None
) -> IndexedCollection:
    """The collection of ``model`` on ``split`` under ``descriptor`` (default: the model's own pooling)."""
    from embed.models.catalog import check_model_name

    check_model_name(model)  # unknown model -> the list of valid names
    key_part = descriptor_key(model, descriptor)
    everything = indexed_collections(store)
    matches = [c for c in everything if c.meta.key.matches(model, split, dataset, key_part)]
    if len(matches) == 1:
        return _refuse_raw_for_unit_length(matches[0], descriptor)
    if not matches:
        have = ", ".join(str(c.meta.key) for c in everything) or "none"
        alternatives = [c for c in everything if c.meta.key.matches(split=split, dataset=dataset, descriptor=key_part)]
        raise CollectionNotFound(
            f"no collection for model {model!r}, split {split!r}{f', dataset {dataset!r}' if dataset else ''} in "
            f"{store.describe_target()} (indexed: {have}). {build_hint(store, everything, model, split, dataset)}"
            f"{indexed_models_hint(alternatives, split)}",
            alternatives,
        )
    raise CollectionNotFound(several_datasets(f"{model}/{split}", [c.meta.dataset for c in matches]))


def build_hint(
    store: VectorStore, everything: List[IndexedCollection], model: str, split: str, dataset: Optional[str] = None
) -> str:
    """What to run for a missing collection: a build command that runs as written, on a data root this database
    already indexes and that has ``split``; or, when no indexed data set has that split, the splits there are."""
    from pathlib import Path

    from embed.sources.datasets import available_splits

    uri = None if store.uri == store.settings.milvus_uri else store.uri
    roots = sorted({c.meta.data_root for c in everything if dataset is None or c.meta.dataset == dataset})
    for root in roots:
        if (Path(root) / split).is_dir():
            return f"Build it: {BuildCommand(model, split, root, uri=uri)}{weights_note(model, store.settings)}"
    if roots:
        splits = sorted({c.meta.split for c in everything} | {s for r in roots for s in available_splits(Path(r))})
        return (
            f"No indexed data set has a split {split!r} ({', '.join(roots)} hold: {', '.join(splits) or 'none'}): "
            f"choose one of those with --split, or build from a data root that has it (--data-root DIR)."
        )
    return f"Nothing is indexed here yet: {quick_start_hint(store)}"


def quick_start_hint(store: VectorStore) -> str:
    """The first build for a database with nothing in it: the README's quick start, on ``store``'s URI (named
    unless it is the one the settings default to)."""
    option_uri = None if store.uri == store.settings.milvus_uri else store.uri
    return (
        f"build a collection first, e.g. the README's quick start "
        f"`{BuildCommand('all', 'val', dataset='tiny-imagenet', limit=1000, uri=option_uri)}`, or your own "
        f"images with --data-root DIR (the folder holding the split folders) instead of --dataset."
    )


def weights_note(model: str, config: RetrievalSettings) -> str:
    """A line saying why a build of ``model`` would fail here now (no weights on disk, none reachable); else empty.

    Offline, the build hint for a default model (gresnet, convnext, vit) cannot run as written: this says so,
    and the next line names what is indexed instead."""
    from embed.models.weights import weights_obtainable

    ok, why = weights_obtainable(model, config)
    return "" if ok else f"\nThat build needs {model}'s weights, which are not obtainable now: {why}."


def indexed_models_hint(alternatives: Sequence[IndexedCollection], split: str) -> str:
    """A line naming the models this database does hold for the split: what --model/--models can choose among (a
    default such as evaluate's gresnet,convnext,vit need not be what was built)."""
    if not alternatives:
        return ""
    several = len({c.meta.dataset for c in alternatives}) > 1
    names = ", ".join(c.meta.model + (f" ({c.meta.dataset})" if several else "") for c in alternatives)
    return f"\nIndexed for split {split!r}: {names}; --model takes one of them, --models several (comma-separated)."


def rerun_on(argv: Sequence[str], option: str, alternatives: Sequence[IndexedCollection]) -> str:
    """The failed command line (``argv`` after ``python -m indexer``) again, runnable on collections that exist:
    ``option`` set to every indexed model for ``--models``, to the first for ``--model``. When the split is indexed
    for several datasets, the one with the most models is chosen with --data-root (unless the line chose one)."""
    import shlex

    by_dataset: Dict[str, List[IndexedCollection]] = {}
    for c in alternatives:
        by_dataset.setdefault(c.meta.dataset, []).append(c)
    chosen = max(sorted(by_dataset.items()), key=lambda item: len(item[1]))[1]
    models = [c.meta.model for c in chosen]
    value = ",".join(models) if option == "--models" else models[0]
    line = list(argv)
    at = next((i for i, word in enumerate(line) if word == option or word.startswith(option + "=")), None)
    if at is None:
        line += [option, value]
    elif line[at] == option:
        line[at + 1 : at + 2] = [value]
    else:
        line[at] = f"{option}={value}"
    if len(by_dataset) > 1 and not any(w == "--data-root" or w.startswith("--data-root=") for w in line):
        line += ["--data-root", chosen[0].meta.data_root]
    return "python -m indexer " + shlex.join(line)
