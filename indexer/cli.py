"""``python -m indexer``: build, status, search, drop, serve, evaluate, maps, robustness, ann.

Module level imports nothing heavy (no torch, timm or pymilvus): `--help` and argument errors are
answered at once; each command imports what it needs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from embed.common.cli_args import (
    CommandParser,
    add_compute_arguments,
    add_data_arguments,
    add_image_folder_arguments,
    add_weights_arguments,
    extract_config,
    model_list,
    non_negative_int,
    one_descriptor,
    port_number,
    positive_int,
    positive_int_list,
    run_cli,
)
from embed.common.descriptor import Descriptor
from embed.common.settings import RetrievalSettings
from embed.models.catalog import BLOG_MODELS
from indexer.build_command import DIR, BuildCommand
from indexer.index_spec import INDEX_TYPES, IndexSpecError
from indexer.milvus_store import StoreError, VectorStore, is_local_uri

log = logging.getLogger(__name__)

EPILOG = """examples:
  python -m indexer build --model effnet-lite0 --split val --data-root ../shared/datasets/tiny-imagenet-200
  python -m indexer build --model all --split val --dataset tiny-imagenet --limit 1000   # the quick start (a rerun embeds only new images)
  python -m indexer build --model all --split val --data-root /data/imagenet --device cuda
  python -m indexer build --model gresnet --split val --checkpoint gresnet50.pth
  python -m indexer status
  python -m indexer search --model effnet-lite0 --split val --image query.jpg -k 5
  python -m indexer search --model effnet-lite0 --split val --image a.jpg queries/ b.png --json   # one process
  python -m indexer evaluate --split val --models effnet-lite0 --data-root ../shared/datasets/tiny-imagenet-200 --plot p.png
  python -m indexer serve --port 19530          # then: --uri http://127.0.0.1:19530 everywhere
  python -m indexer build --model vit --split val --uri http://milvus.internal:19530 --token user:password
"""

DATABASE_NOTE = """The database defaults to Milvus Lite in data/milvus.db (env RETRIEVAL_MILVUS_URI overrides it).
Several processes (the app, builds, searches) share it with no setup: the first one to open it serves
it on 127.0.0.1 while it runs and writes the address to data/milvus.db.server.json; the others connect there.
"""
EPILOG += "\n" + DATABASE_NOTE

# each subcommand's --help shows its own examples (the top-level --help shows them all)
EXAMPLES = {
    "build": """  python -m indexer build --model all --split val --dataset tiny-imagenet --limit 1000   # the quick start
  python -m indexer build --model gresnet --split val --data-root /data/imagenet --checkpoint gresnet50.pth
  python -m indexer build --model effnet-lite0 --split val --dataset tiny-imagenet --uri http://127.0.0.1:19530 \\
      --index HNSW --index-param M=16 --index-param efConstruction=200 --search-param ef=64   # rebuilds only the index
  python -m indexer build --model all --images ~/Pictures/shop --labels labels.csv   # any folder; labels optional
  python -m indexer build --model effnet-lite0 --split val --data-root DIR --descriptor gem3-l2   # its own collection""",
    "status": """  python -m indexer status
  python -m indexer status --json
  python -m indexer status --uri http://127.0.0.1:19530""",
    "search": """  python -m indexer search --model effnet-lite0 --split val --image query.jpg -k 5
  python -m indexer search --model effnet-lite0 --split val --image a.jpg queries/ b.png --json   # one process
  python -m indexer search --model effnet-lite0 --split val --image ../shared/datasets/tiny-imagenet-200/val/images/val_3.JPEG --include-self
  python -m indexer search --model effnet-lite0 --images ~/Pictures/shop --image new.jpg""",
    "drop": """  python -m indexer drop --model vit --split val          # asks before it deletes
  python -m indexer drop --model effnet-lite0 --split val --data-root ../shared/datasets/tiny-imagenet-200 --yes""",
    "serve": """  python -m indexer serve --port 19530          # then: --uri http://127.0.0.1:19530 everywhere
  python -m indexer serve --data-dir data/milvus.db --port 0""",
}


EVALUATE_EXAMPLES = """evaluate examples:
  python -m indexer evaluate --split val --models effnet-lite0,effnet-lite1,effnet-lite2 \\
      --data-root ../shared/datasets/tiny-imagenet-200 --holdout 0.2 --milvus-check 200 --report data/report
  python -m indexer evaluate --models gresnet,convnext,vit --split val --database-split train --query-split val \\
      --data-root /data/imagenet --report report/
  python -m indexer evaluate --models effnet-lite0,effnet-lite1,effnet-lite2 --images ~/Pictures/shop --report r/
      # unlabelled: copy retrieval, stability, agreement, near-duplicates, map trustworthiness (label_free.html)
  python -m indexer evaluate --simulate-rows 1281167 --dim 2048 --queries 50000    # DINO kNN dry run: ImageNet train x val
  python -m indexer evaluate --split val --models effnet-lite0,effnet-lite1 --data-root DIR --descriptors-only \
      --descriptors avg,gem3-white512 --whitening lite0.npz,lite1.npz --report data/report
      # each whitening from `indexer whiten --model M --split train --data-root DIR --pooling gem3 --dim 512`
      # (another split; or --split val --eval-classes N, then evaluate --eval-classes N: the classes left out)
"""


def add_store_arguments(p: argparse.ArgumentParser, config: RetrievalSettings) -> None:
    g = p.add_argument_group("vector store")
    g.add_argument(
        "--uri",
        default=config.milvus_uri,
        help="Milvus Lite folder ending in .db, or http://host:19530 for a Milvus server / Zilliz Cloud "
        "(env RETRIEVAL_MILVUS_URI; default %(default)s)",
    )
    g.add_argument("--token", default=config.milvus_token, help="user:password or API key (env RETRIEVAL_MILVUS_TOKEN)")


def add_collection_arguments(p: argparse.ArgumentParser, config: RetrievalSettings) -> None:
    """Which collection: model + split (+ data root when several datasets are indexed), and where."""
    p.add_argument("--model", required=True, help="registry name, e.g. gresnet, convnext, vit, effnet-lite0")
    add_lookup_arguments(p)
    _add_descriptor(p, "the collection of this descriptor (as built with `build --descriptor`)")
    add_store_arguments(p, config)


def add_lookup_arguments(p: argparse.ArgumentParser, split_help: str = "split the collections were built from") -> None:
    """Which indexed images a command reads: --images DIR (the folder a build was given) or --split (+ --data-root)."""
    g = p.add_argument_group("which images (--images DIR, or --split NAME [--data-root DIR])")
    add_image_folder_arguments(g, labels=False)
    g.add_argument("--split", default=None, help=f"{split_help}, e.g. val")
    g.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="choose the dataset (by its folder name) when the split is indexed for several",
    )


INDEX_NOTE = (
    "The index is the collection's, not the vectors': another --index on an existing collection rebuilds only the "
    "index over the same rows (no --recreate, nothing re-embedded or re-sent). Milvus Lite searches exactly "
    "whatever the index (it refuses IVF_PQ and DISKANN): approximate indexes belong on a server (--uri)."
)


def add_index_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("index (Milvus' names; see docs/approximate-index.md)", INDEX_NOTE)
    g.add_argument(
        "--index",
        type=str.upper,
        choices=INDEX_TYPES,
        default=None,
        help="the collection's vector index (default: keep the existing collection's; FLAT, exact, for a new one)",
    )
    g.add_argument(
        "--index-param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a build parameter, repeatable: IVF_*: nlist (128); IVF_PQ: m (dim/16), nbits (8); HNSW: M (30), "
        "efConstruction (360); defaults are Milvus' (m has none: dim/16 here)",
    )
    g.add_argument(
        "--search-param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="the search parameter the app and `search` use: ef (HNSW, 64), nprobe (IVF_*, 8), search_list "
        "(DISKANN, 100)",
    )


def index_spec_arg(args):
    """The IndexSpec the command line asks for, or None when it names no --index (parameters alone are refused)."""
    from indexer.index_spec import make_index_spec

    if args.index is None:
        if args.index_param or args.search_param:
            raise IndexSpecError("--index-param / --search-param need --index TYPE")
        return None
    return make_index_spec(args.index, args.index_param, search=args.search_param)


def _store(args, create: bool = False, **kw) -> VectorStore:
    """The database the command names, with the command's settings; only ``build`` (create=True) may create a Lite
    database that is not there."""
    return VectorStore(args.uri, args.token, create=create, settings=args.settings, **kw)


# options several commands share, each defined once; ``what`` says what the option is for in that command


def _add_models(p: argparse.ArgumentParser, default: Optional[Sequence[str]] = BLOG_MODELS, help_: str = "") -> None:
    shown = f"default {','.join(default)}" if default else "default: every model indexed for the split"
    p.add_argument(
        "--models",
        type=model_list,
        default=list(default) if default else None,
        help=f"comma-separated models ({help_ or shown})",
    )


def _add_seed(p, what: str) -> None:
    p.add_argument("--seed", type=non_negative_int, default=0, help=f"seed of {what} (default 0)")


def _add_bootstrap(p) -> None:
    p.add_argument(
        "--bootstrap",
        type=_int_at_least_1000,
        default=2000,
        help="bootstrap resamples (at least 1000; default %(default)s)",
    )


def _add_device(p, what: str) -> None:
    p.add_argument("--device", default="auto", help=f"where {what}: auto, cpu, cuda or cuda:N (default auto)")


def _add_embeddings(p, what: str, config: RetrievalSettings) -> None:
    p.add_argument(
        "--embeddings",
        type=Path,
        default=Path(config.embeddings),
        help=f"embeddings root: {what} (default %(default)s)",
    )


def _add_descriptor(p, what: str) -> None:
    """``--descriptor NAME`` (embed.common.descriptor): ``build`` makes a collection of it, the others read one."""
    p.add_argument(
        "--descriptor",
        type=one_descriptor,
        default=None,
        metavar="NAME",
        help=f"{what}: pooling + post-processing, e.g. gem3, gem3-l2, gem3-white512 (default: the model's own "
        "pooling, today's collection; `python -m embed models` lists each model's poolings, docs/descriptors.md "
        "the names)",
    )


def _add_no_progress(p) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _fmt(p: argparse._SubParsersAction, name: str, help_: str, **kw) -> argparse.ArgumentParser:
    epilog = f"examples:\n{EXAMPLES[name]}\n\n{DATABASE_NOTE}" if name in EXAMPLES else None
    return p.add_parser(
        name, help=help_, description=help_, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter, **kw
    )


def build_parser(config: RetrievalSettings) -> argparse.ArgumentParser:
    """The command line, its defaults from ``config`` (run_cli reads it once)."""
    parser = CommandParser(
        prog="python -m indexer",
        description="Per-model Milvus collections (L2; FLAT, exact, unless built with --index).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = _fmt(sub, "build", "extract (reusing cached embeddings) and index a split")
    p.add_argument(
        "--model",
        required=True,
        help="gresnet, convnext, vit, effnet-lite0/1/2, timm:<name>, or all (every model with real weights)",
    )
    p.add_argument("--normalize", action="store_true", help="store unit-length vectors (L2 ranking == cosine)")
    _add_descriptor(
        p,
        "the descriptor of the collection's vectors (another one than the default gets its own "
        "collection, named after it)",
    )
    p.add_argument(
        "--whitening",
        type=Path,
        default=None,
        help="the learned whitening (.npz from `indexer whiten`) a -white descriptor applies",
    )
    p.add_argument("--recreate", action="store_true", help="drop and rebuild a collection built differently")
    add_index_arguments(p)
    add_data_arguments(p, config)
    add_weights_arguments(p)
    add_compute_arguments(p, config)
    add_store_arguments(p, config)

    p = _fmt(
        sub,
        "whiten",
        "learn a PCA-whitening from a model's embeddings of images the evaluation will not use, stored with its "
        "own identity (for `build --descriptor ...-white` and the queries)",
    )
    p.add_argument("--model", required=True, help="registry name, e.g. effnet-lite0")
    p.add_argument(
        "--pooling", type=one_descriptor, default=None, help="the pooling it whitens (default: the model's own)"
    )
    p.add_argument("--dim", type=positive_int, default=None, help="output dimensions (default: all)")
    p.add_argument(
        "--eval-classes",
        type=positive_int,
        default=None,
        help="learn it within --split on the classes left out of a seeded draw of N evaluated classes (the same "
        "draw as `evaluate --eval-classes N --class-seed S`); without it, every image of --split (another split "
        "than the one evaluated)",
    )
    p.add_argument("--class-seed", type=int, default=0, help="seed of the class draw (default %(default)s)")
    add_data_arguments(p, config)
    p.add_argument(
        "--out",
        type=Path,
        default=Path(config.embeddings),
        help="embeddings folder (default %(default)s)",
    )

    p = _fmt(sub, "status", "list collections: model, split, dataset, rows, dim, index, metric, weights")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_store_arguments(p, config)

    p = _fmt(sub, "search", "top-k neighbours of image files (several files and folders in one run)")
    add_collection_arguments(p, config)
    p.add_argument(
        "--image",
        type=Path,
        required=True,
        nargs="+",
        metavar="PATH",
        help="query image files and/or folders (their image files, recursively); a file that cannot be "
        "read is reported by name and the others are still answered (exit status 1 if any failed)",
    )
    p.add_argument("-k", type=positive_int, default=10, help="number of neighbours (default %(default)s)")
    p.add_argument(
        "--include-self",
        action="store_true",
        help="keep a query that is one of the collection's own images among its hits (by default it is left "
        "out, as the app and the evaluation leave a query out)",
    )
    p.add_argument("--checkpoint", type=Path, default=None, help="weights file, if the collection was built with one")
    _add_device(p, "the query model runs")
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per line and per image: its path and hits, or its path and error",
    )

    p = _fmt(sub, "drop", "delete a model's collection (asks first; --yes does not)")
    add_collection_arguments(p, config)
    p.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="drop without asking (needed where no terminal can answer: scripts, pipes)",
    )

    p = _fmt(sub, "serve", "serve a Milvus Lite database on 127.0.0.1 so several processes can share it")
    p.add_argument(
        "--port",
        type=port_number,
        default=19530,
        help="TCP port to listen on (default %(default)s; 0 picks a free one)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="bind address (default 127.0.0.1; 0.0.0.0 exposes the database to the network, unauthenticated)",
    )
    p.add_argument("--data-dir", default=config.milvus_uri, help="Milvus Lite database folder (default %(default)s)")

    p = _fmt(
        sub,
        "evaluate",
        "precision@k, recall@k, R-precision, MAP@R, kNN accuracy (leave-one-out); "
        "--report DIR adds CIs, paired tests, per-class, agreement, style, DINO kNN, galleries",
    )
    p.epilog = EVALUATE_EXAMPLES
    add_lookup_arguments(p, "split the collections were built from (required unless --images or --simulate-rows)")
    p.set_defaults(split_required=False)
    _add_models(p)
    p.add_argument(
        "--k", type=positive_int_list, default="1,5,10,20,100", help="comma-separated cut-offs (default %(default)s)"
    )
    p.add_argument(
        "--features",
        default="raw,normalized",
        help="raw, normalized or both (default both; the report compares models on the first)",
    )
    _add_device(p, "the exact neighbour computation runs")
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON")
    p.add_argument("--csv", type=Path, default=None, help="write the results as CSV")
    p.add_argument("--plot", type=Path, default=None, help="write precision@k vs k as PNG")
    p.add_argument(
        "--milvus-check",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="also search N random queries through Milvus (both feature variants) and require the same "
        "neighbour lists as a float64 brute force, ties within relative 1e-6 aside",
    )
    p.add_argument(
        "--time-naive",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="also time a naive evaluation sending N single-query Milvus searches (ratio vs exact)",
    )
    _add_no_progress(p)
    g = p.add_argument_group("comparison report (--report)")
    g.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="DIR",
        help="write DIR/report.html (self-contained), DIR/report.json and DIR/report.md",
    )
    _add_bootstrap(g)
    _add_seed(g, "resampling, holdout and sampling")
    g.add_argument(
        "--style-queries",
        type=non_negative_int,
        default=500,
        help="queries sampled for the colour/structure similarity measure (default %(default)s)",
    )
    g.add_argument(
        "--galleries", type=non_negative_int, default=8, help="disagreement galleries to draw (default %(default)s)"
    )
    _add_embeddings(g, "where `python -m embed check` saved check.json", config)
    g = p.add_argument_group("descriptors (with --report: DIR/descriptors.md, .json, .png; docs/descriptors.md)")
    g.add_argument(
        "--descriptors",
        nargs="?",
        const="default,gem3-l2,gem3-white",
        default=None,
        metavar="LIST",
        help="evaluate every model under each descriptor, e.g. default,gem3-l2,gem3-white512 (alone: "
        "%(const)s); each pooling's collection must be built (`build --descriptor gem3`)",
    )
    g.add_argument(
        "--eval-classes",
        type=positive_int,
        default=None,
        metavar="N",
        help="evaluate the descriptors on a seeded draw of N classes (every descriptor alike) and learn the "
        "whitenings on the other classes",
    )
    g.add_argument("--class-seed", type=non_negative_int, default=0, help="seed of the class draw (default 0)")
    g.add_argument(
        "--whitening",
        type=_paths,
        default=[],
        metavar="PATH[,PATH]",
        help="learned whitenings (.npz from `indexer whiten`, as `build --whitening` takes) for the -white "
        "descriptors instead of learning them here: each serves the model and pooling it was learned on, a "
        "-white<dim> descriptor the one into <dim> dimensions, -white the one that keeps them all; their images "
        "must be disjoint from the evaluated ones (another split, or classes left out of the evaluated draw)",
    )
    g.add_argument(
        "--descriptors-only",
        action="store_true",
        help="only the descriptors section (with --report: DIR/descriptors.*), not the main evaluation and report",
    )
    g.add_argument(
        "--query-expansion",
        default="",
        metavar="LIST",
        help="query-side variants of the unit-length descriptors, computed exactly: aqe:K:ALPHA (alpha-query "
        "expansion) and/or dba:K:ALPHA (database-side augmentation), e.g. aqe:3:3,dba:3:3",
    )
    g = p.add_argument_group("DINO-style kNN (weighted 20-NN, T = 0.07, database and queries disjoint)")
    g.add_argument(
        "--holdout",
        type=_fraction,
        default=0.0,
        metavar="FRACTION",
        help="hold out this fraction of every class of --split as queries, the rest is the database (e.g. 0.2)",
    )
    g.add_argument("--database-split", default=None, help="database split, e.g. train (with --query-split)")
    g.add_argument("--query-split", default=None, help="query split, e.g. val (with --database-split)")
    g.add_argument(
        "--chunk-rows", type=positive_int, default=65536, help="database rows per streamed chunk (default %(default)s)"
    )
    g.add_argument(
        "--simulate-rows",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="dry run: time a sample of a simulated N-row database, print projected time and peak memory",
    )
    g.add_argument("--dim", type=positive_int, default=2048, help="dimension for --simulate-rows (default %(default)s)")
    g.add_argument(
        "--queries", type=positive_int, default=10000, help="queries for --simulate-rows (default %(default)s)"
    )
    g = p.add_argument_group(
        "label-free measures (always for unlabelled images or fewer than two classes; for labelled --images "
        "folders too, unless --no-label-free)"
    )
    g.add_argument(
        "--label-free",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="copy retrieval, neighbour-list stability, agreement between models, near-duplicates and map "
        "trustworthiness, with intervals and paired tests (DIR/label_free.html with --report)",
    )
    g.add_argument(
        "--copy-queries",
        type=non_negative_int,
        default=200,
        help="images transformed and searched for their original (0: none; each is embedded once per "
        "transform and model, minutes on a CPU; default %(default)s)",
    )
    g.add_argument(
        "--copy-families",
        default="zoom,jpeg,blur,colour",
        help="transforms of the copy queries (as robustness --families; default %(default)s)",
    )
    g.add_argument("--copy-severities", type=positive_int, default=2, help="levels per transform (default %(default)s)")
    g.add_argument(
        "--duplicate-distance",
        type=_non_negative_float,
        default=0.05,
        help="near-duplicates: squared L2 between unit-length vectors (2 - 2 cos) at most this (default %(default)s)",
    )
    g.add_argument(
        "--map-method",
        default="pca",
        choices=["pca", "umap", "tsne"],
        help="the 2-D map whose trustworthiness is measured (cached in DIR/maps; default %(default)s)",
    )
    add_store_arguments(p, config)
    add_maps_parser(sub, config)
    add_robustness_parser(sub, config)
    add_ann_parser(sub, config)
    return parser


def _models_for_build(args) -> Tuple[List[str], List[str]]:
    """(models to build, models skipped): one model, or for ``all`` every registry model whose real weights can be
    had here (each other one skipped, with a line why)."""
    from embed.models.catalog import REGISTRY
    from embed.models.weights import weights_obtainable

    if args.model != "all":
        return [args.model], []
    if args.checkpoint:
        raise StoreError("--checkpoint names one model's weights: use it with one --model, not all")
    chosen, skipped = [], []
    for name in REGISTRY:
        ok, why = weights_obtainable(name, args.settings)
        if ok or args.random_init:
            chosen.append(name)
        else:
            print(f"skipping {name}: {why}", file=sys.stderr)
            skipped.append(name)
    return chosen, skipped


def cmd_build(args) -> int:
    """Exit 0 when at least one model was built (``all`` skips the ones without weights), 2 when none was.

    The database is opened (and its write check made) only once the data set is on disk and a model is loaded,
    still before any extraction: a build that fails before then leaves no database file behind.
    """
    from embed.common.cli_args import check_inputs, check_split_has_images, resolve_data_root
    from embed.models.weights import WeightsUnavailable

    check_inputs(
        args, all_allowed=True
    )  # names, paths and the split: in a moment, before the data set, a model or the store is opened
    resolve_data_root(args)  # download a named --dataset once, before the first model
    check_split_has_images(args.data_root, args.split)  # a downloaded data set's split, checked now
    spec = index_spec_arg(args)  # names and ranges: before any model is loaded
    from indexer.whitening import Whitening

    whitening = Whitening.load(args.whitening) if args.whitening else None
    store: Optional[VectorStore] = None
    if not is_local_uri(args.uri):  # a server that cannot be reached or written fails now, not after a model loads
        store = _store(args, create=True)
        store.ensure_writable()
    from indexer.build import build, load_embedder
    from indexer.index_spec import lite_note

    built: List[str] = []  # "model (N rows)", for the closing summary
    models, skipped = _models_for_build(args)
    for model in models:
        cfg = extract_config(args, model=model)
        try:
            embedder = load_embedder(cfg)
        except WeightsUnavailable as e:
            if args.model != "all":
                raise
            print(f"skipping {model}: {' '.join(str(e).split())}", file=sys.stderr)
            skipped.append(model)
            continue
        if store is None:
            store = _store(args, create=True)
            if store.is_lite and spec is not None:
                lite_note(spec)  # IVF_PQ / DISKANN on Lite: refused before minutes of extraction
            store.ensure_writable()  # before minutes of extraction, not after
        result = build(
            cfg,
            store,
            normalize=args.normalize,
            recreate=args.recreate,
            progress=not args.no_progress,
            embedder=embedder,
            index=spec,
            descriptor=args.descriptor or Descriptor(),
            whitening=whitening,
        )
        built.append(f"{model} ({result.rows:,} rows{', already complete' if result.already_complete else ''})")
        print(
            json.dumps(
                {
                    "collection": result.collection,
                    "rows": result.rows,
                    "inserted": result.inserted,
                    "skipped_images": result.skipped_images,
                    "already_complete": result.already_complete,
                    "insert_rows_per_s": round(result.rows_per_s, 1),
                    "weights": result.weights,
                    "index": result.index,
                    "index_seconds": None if result.index_seconds is None else round(result.index_seconds, 2),
                    "labels": result.labels,
                }
            )
        )
    if not built:
        print(
            "error: no model was built: none has real weights here (see the lines above); "
            "use --random-init to build with random weights",
            file=sys.stderr,
        )
        return 2
    if args.model == "all":  # the JSON lines are for scripts; this line is for the person who ran it
        summary = f"built {len(built)} of {len(built) + len(skipped)} models ({result.labels}): {', '.join(built)}"
        print(summary + (f"; skipped (no weights here): {', '.join(skipped)}" if skipped else ""), file=sys.stderr)
    return 0


def cmd_whiten(args) -> int:
    from embed.common.cli_args import resolve_data_root
    from embed.common.identity import EmbeddingKey
    from embed.models.catalog import get_spec
    from indexer.whitening import ClassSplit, learn_from_shards

    pooling = (args.pooling or Descriptor()).pooled
    dataset = resolve_data_root(args).name
    key = EmbeddingKey(args.model, dataset, args.split, pooling.key_part(get_spec(args.model).default_pooling))
    class_split = ClassSplit(args.eval_classes, args.class_seed) if args.eval_classes else None
    whitening = learn_from_shards(args.out, key.folder(args.out), class_split, args.dim)
    print(json.dumps({"path": str(whitening.path), "whitening": whitening.identity.describe()}))
    return 0


def cmd_status(args) -> int:
    from indexer.catalog import collection_descriptor_label, indexed_collections

    store = _store(args)
    rows = []
    for c in indexed_collections(store):
        d = store.describe(c.name)
        complete = c.meta.complete_with(d["rows"])
        rows.append(
            {
                "collection": c.name,
                "model": c.meta.model,
                "split": c.meta.split,
                "dataset": c.meta.dataset,
                "rows": d["rows"],
                "rows_built": d["rows_built"],
                "dim": c.meta.dim,
                "index_type": d["index_type"],
                "index": c.meta.index.label,
                "index_params": c.meta.index.params,
                "search_params": c.meta.index.search_params(),
                "metric": d["metric"],
                "normalized": c.meta.normalized,
                "complete": complete,
                "weights": c.meta.identity.weights_source,
                "weights_fingerprint": c.meta.identity.weights_fingerprint,
                "decode": c.meta.identity.decode,
                "precision": c.meta.identity.precision,
                "labels": c.meta.labels,
                "descriptor": collection_descriptor_label(c.meta),
            }
        )
    if args.json:
        print(json.dumps({"uri": store.uri, "collections": rows}, indent=1))
        return 0
    shared = store.sharing()
    print(f"{store.describe_target()}{f' ({shared})' if shared else ''}: {len(rows)} collection(s)")
    for r in rows:
        flag = "" if r["complete"] else f"  (INCOMPLETE: {r['rows']} of {r['rows_built']} rows; rerun build)"
        rnd = "  RANDOM WEIGHTS" if r["weights"] == "random" else ""
        if r["index_type"] != r["index"].split(" ")[0]:  # the index was changed outside this tool
            flag += f"  (Milvus reports index {r['index_type']}; rerun build with --index to repair)"
        print(
            f"  {r['collection']:45} {r['model']:13} {r['dataset']}/{r['split']:6} rows={r['rows']:<8} "
            f"dim={r['dim']:<5} {r['descriptor']:14} {r['index']}/{r['metric']} {r['weights_fingerprint'][:23]}"
            f"{rnd}{flag}"
        )
    return 0


def _dataset_arg(args) -> Optional[str]:
    return Path(args.data_root).expanduser().resolve().name if args.data_root else None


def cmd_search(args) -> int:
    from embed.sources.datasets import class_name
    from indexer.catalog import find_collection, incomplete_problem
    from indexer.image_search import expand_query_paths, search_images
    from indexer.query_embedding import QueryEmbedder

    store = _store(args)
    coll = find_collection(store, args.model, args.split, _dataset_arg(args), args.descriptor)
    live = store.count(coll.name)
    if problem := incomplete_problem(coll, live, args.uri):
        if not live:
            raise StoreError(problem)
        log.warning("searching the %s rows it holds: %s", f"{live:,}", problem)
    paths = expand_query_paths(args.image)
    if not paths:
        raise StoreError(f"no query images in {' '.join(str(p) for p in args.image)}")
    answers = search_images(
        store,
        coll,
        lambda: QueryEmbedder.for_collection(coll.meta, args.checkpoint, args.device, args.settings),
        paths,
        args.k,
        include_self=args.include_self,
    )
    for a in answers:
        for h in a.hits:
            h["class_name"] = class_name(h["class_id"] or "")
            h["path"] = str(Path(coll.meta.data_root) / coll.meta.split / h["relpath"])
    failed = [a for a in answers if a.error]
    labels = coll.meta.label_source.describe(coll.meta.layout)
    if args.json:
        for a in answers:
            body = {"error": a.error} if a.error else {"indexed_id": a.indexed_id, "hits": a.hits}
            print(
                json.dumps(
                    {
                        "image": a.image,
                        "collection": coll.name,
                        "distance": "squared L2",
                        "random_weights": coll.meta.is_random,
                        "labels": labels,
                        **body,
                    }
                ),
                flush=True,
            )
    else:
        if coll.meta.is_random:
            print("WARNING: this collection was built with RANDOM weights")
        for a in answers:
            if a.error:
                continue
            print(f"{a.image}: top {len(a.hits)} in {coll.name} (distance = squared L2; {labels}):")
            if a.indexed_id is not None:
                print(
                    f"     it is indexed image id={a.indexed_id}: "
                    + ("kept among its hits (--include-self)" if args.include_self else "left out of its own hits")
                )
            for rank, h in enumerate(a.hits, 1):
                cls = f"{h['class_id']} ({h['class_name']})  " if h["class_id"] else ""
                print(f"{rank:3}. id={h['id']:<7} d²={h['distance']:<12.4f} {cls}{h['path']}")
    for a in failed:
        print(f"error: {a.error}", file=sys.stderr)
    if len(answers) > 1:
        log.info(
            "answered %d of %d query images%s",
            len(answers) - len(failed),
            len(answers),
            f"; {len(failed)} could not be read (named above)" if failed else "",
        )
    return 1 if failed else 0


def cmd_drop(args) -> int:
    from indexer.catalog import find_collection

    store = _store(args)
    coll = find_collection(store, args.model, args.split, _dataset_arg(args), args.descriptor)
    what = f"{coll.name} ({store.count(coll.name):,} rows: {coll.meta.model} on {coll.meta.dataset}/{coll.meta.split})"
    if not args.yes:
        if not sys.stdin.isatty():
            raise StoreError(f"drop deletes {what} for good; no terminal here to confirm it: pass --yes")
        answer = input(f"Drop {what}? The embeddings stay on disk; rebuilding re-inserts them. [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print(f"not dropped: {coll.name}")
            return 1
    store.drop(coll.name)
    print(f"dropped {coll.name}")
    return 0


def cmd_serve(args) -> int:
    from indexer.serve import serve

    return serve(args.data_dir, args.host, args.port)


def _evaluated_collection(store: VectorStore, args, models: List[str]):
    """The dataset to evaluate: from --data-root, else the one the split is indexed for (as `search` finds it)."""
    from indexer.catalog import find_collection, one_dataset

    return one_dataset([find_collection(store, m, args.split, _dataset_arg(args)) for m in models], args.split)[0]


def _int_at_least_1000(text: str) -> int:
    value = positive_int(text)
    if value < 1000:
        raise argparse.ArgumentTypeError(f"needs at least 1000 resamples for a 95% interval, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 0.05, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.2, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, e.g. 0.2, got {text!r}")
    return value


def cmd_evaluate(args) -> int:
    if args.simulate_rows:
        from indexer.evaluation.knn import dry_run

        result = dry_run(
            args.simulate_rows,
            args.dim,
            args.queries,
            args.chunk_rows,
            device="cpu" if args.device == "auto" else args.device,
            seed=args.seed,
        )
        print("\n".join(result.lines()))
        if args.json:
            from dataclasses import asdict

            args.json.write_text(json.dumps(asdict(result), indent=1))
        return 0
    if not args.split:
        raise StoreError("--split is required (the split the collections were built from, e.g. val)")
    if bool(args.database_split) != bool(args.query_split):
        raise StoreError(
            "--database-split and --query-split go together (e.g. --database-split train --query-split val)"
        )
    if args.whitening and not any(d.whiten for d in _descriptors_asked(args)):
        raise StoreError(
            f"--whitening is for -white descriptors, and --descriptors {args.descriptors or '(not given)'} names "
            f"none: e.g. --descriptors avg,gem3-white512"
        )
    from embed.sources.datasets import labelled
    from indexer.evaluation.label_free import collection_class_ids

    store = _store(args)
    models = args.models
    reference = _evaluated_collection(store, args, models)
    if args.descriptors_only:
        if not args.descriptors:
            raise StoreError("--descriptors-only needs --descriptors")
        _evaluate_descriptors(args, store, models, reference.meta)
        return 0
    class_ids = collection_class_ids(store, reference.name)
    labels = reference.meta.labels_text(class_ids)
    has_labels = labelled(class_ids)
    print(f"{reference.meta.dataset}/{args.split}: {len(class_ids):,} images, {labels}")
    label_free = (
        args.label_free if args.label_free is not None else (not has_labels or reference.meta.layout == "folder")
    )
    if has_labels:
        _evaluate_labelled(args, store, models, reference, labels)
    else:
        print(
            "no precision, recall or kNN figures: they need labels (two or more classes); "
            + ("the label-free measures follow" if label_free else "run without --no-label-free for label-free ones")
        )
        for option in ("csv", "plot"):
            if getattr(args, option):
                print(f"--{option} skipped: it holds precision figures, which need labels")
    if label_free:
        _evaluate_label_free(args, store, models, reference, labels, json_too=not has_labels)
    return 0


def _evaluate_label_free(args, store: VectorStore, models: List[str], reference, labels: str, json_too: bool) -> None:
    from indexer.evaluation.label_free import LabelFreeConfig, evaluate_label_free, write_label_free

    cfg = LabelFreeConfig(
        models=models,
        split=args.split,
        dataset=reference.meta.dataset,
        data_root=Path(args.data_root).expanduser().resolve() if args.data_root else None,
        out=args.report,
        embeddings=args.embeddings,
        copy_queries=args.copy_queries,
        families=[f.strip() for f in args.copy_families.split(",") if f.strip()],
        severities=args.copy_severities,
        duplicate_distance=args.duplicate_distance,
        map_method=args.map_method,
        resamples=args.bootstrap,
        seed=args.seed,
        galleries=args.galleries,
        device=args.device,
        progress=not args.no_progress,
        labels=labels,
    )
    result = evaluate_label_free(store, cfg)
    print(result.measures_note)
    for m in result.measures:
        print(f"{m.model}: {m.measure} {m.value.mean:.3f} ({m.value.words()})")
    for d in result.duplicates:
        print(
            f"{d.model}: {d.pairs} near-duplicate pair(s) in {len(d.groups)} group(s) "
            f"(squared L2 <= {result.duplicate_distance:g}, unit-length vectors)"
        )
    for o in result.overlaps:
        print(f"{o.a} / {o.b}: top-10 overlap {o.value.mean:.3f} ({o.value.words()})")
    for sentence in result.sentences:
        print(sentence)
    if json_too and args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(result.to_json())
        print(f"wrote {args.json}")
    if args.report:
        write_label_free(result, args.report)
        print(f"wrote {args.report / 'label_free.html'}, label_free.json and label_free.md")


def _evaluate_labelled(args, store: VectorStore, models: List[str], reference, labels: str) -> None:
    from indexer.evaluation.evaluate import EvalConfig, evaluate_runs, markdown_table, write_csv, write_json, write_plot

    ks = list(args.k)
    if args.report:  # the report compares P@1 and P@10
        ks = sorted(set(ks) | {1, 10})
    cfg = EvalConfig(
        split=args.split,
        dataset=reference.meta.dataset,
        models=models,
        ks=ks,
        features=[f.strip() for f in args.features.split(",")],
        device=args.device,
        milvus_check=args.milvus_check,
        time_naive=args.time_naive,
        seed=args.seed,
        progress=not args.no_progress,
        holdout=args.holdout,
        database_split=args.database_split,
        query_split=args.query_split,
        chunk_rows=args.chunk_rows,
        data_root=reference.meta.data_root,
        labels=labels,
    )
    bad = [f for f in cfg.features if f not in ("raw", "normalized")]
    if bad:
        raise StoreError(f"--features takes raw, normalized or raw,normalized (got {args.features!r})")
    evaluation, runs = evaluate_runs(cfg, store)
    print(markdown_table(evaluation))
    for r in evaluation.results:
        check = r.milvus_check
        if check:  # a disagreement already ended the run with an error naming the lists
            print(
                f"milvus check {r.model}/{r.features}: {check.agree}/{check.queries} top-{check.k} "
                f"neighbour lists from Milvus agree with the exact computation"
            )
    for path, writer in ((args.json, write_json), (args.csv, write_csv), (args.plot, write_plot)):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            writer(evaluation, path)
            print(f"wrote {path}")
    if args.report:
        from indexer.evaluation.report import ReportConfig, build_report

        data_root = Path(args.data_root or reference.meta.data_root).expanduser().resolve()
        rcfg = ReportConfig(
            out=args.report,
            data_root=data_root if (data_root / args.split).is_dir() else None,
            split=args.split,
            embeddings=args.embeddings,
            resamples=args.bootstrap,
            seed=args.seed,
            style_queries=args.style_queries,
            galleries=args.galleries,
        )
        doc = build_report(evaluation, runs, rcfg)
        for sentence in doc.sentences:
            print(sentence)
        print(f"wrote {args.report / 'report.html'}, report.json and report.md")
    if args.descriptors:
        _evaluate_descriptors(args, store, models, reference.meta)


def _paths(text: str) -> List[Path]:
    """argparse type for comma-separated files such as ``a.npz,b.npz``: at least one."""
    paths = [Path(t.strip()).expanduser() for t in text.split(",") if t.strip()]
    if not paths:
        raise argparse.ArgumentTypeError(f"expected comma-separated files, e.g. a.npz,b.npz, got {text!r}")
    return paths


def _query_expansions(text: str):
    from indexer.evaluation.descriptors import QueryExpansion

    out = []
    for part in [t.strip() for t in text.split(",") if t.strip()]:
        bits = part.split(":")
        try:
            if bits[0] not in ("aqe", "dba") or len(bits) != 3:
                raise ValueError
            out.append(QueryExpansion(bits[0], positive_int(bits[1]), float(bits[2])))
        except (ValueError, argparse.ArgumentTypeError):
            raise StoreError(f"--query-expansion: expected aqe:K:ALPHA or dba:K:ALPHA, got {part!r}") from None
    return out


def _descriptors_asked(args) -> List[Descriptor]:
    """The descriptors of ``evaluate --descriptors`` (none when it is not given)."""
    from embed.common.descriptor import InvalidDescriptor, parse_descriptors

    if not args.descriptors:
        return []
    try:
        return parse_descriptors(args.descriptors)
    except InvalidDescriptor as exc:
        raise StoreError(f"--descriptors: {exc}") from None


def _evaluate_descriptors(args, store: VectorStore, models: List[str], meta) -> None:
    from indexer.evaluation.descriptors import DescriptorEvalConfig, evaluate_descriptors, to_markdown, write_report

    descriptors = _descriptors_asked(args)
    cfg = DescriptorEvalConfig(
        models=models,
        dataset=meta.dataset,
        split=args.split,
        descriptors=descriptors,
        eval_classes=args.eval_classes,
        class_seed=args.class_seed,
        whitening_files=args.whitening,
        expansions=_query_expansions(args.query_expansion),
        embeddings=args.embeddings,
        device="cpu" if args.device == "auto" else args.device,
        seed=args.seed,
        progress=not args.no_progress,
        data_root=meta.data_root,
    )
    section = evaluate_descriptors(cfg, store)
    if args.report:
        print(f"wrote {write_report(section, args.report)}, descriptors.json and descriptors.png")
    else:
        print(to_markdown(section))


# maps: 2-D maps of every model's embedding space for the app's Maps page (indexer/evaluation/maps.py) ------------------

MAPS_EXAMPLES = """maps examples:
  python -m indexer maps --split val                                    # UMAP of every indexed model, raw features
  python -m indexer maps --split val --models effnet-lite0,effnet-lite1,effnet-lite2 --method pca
  python -m indexer maps --split val --method tsne --features normalized --report-dir data/report
  python -m indexer maps --split val --models effnet-lite0 --descriptor gem3 --method pca   # its gem3 collection
  python -m indexer maps --split val --uri http://127.0.0.1:19530 --force    # recompute even when cached

Maps are cached in DIR/maps/ (DIR: --report-dir) under the collection's identity and the method's parameters:
a second run reads them back at once, a rebuilt collection gets a new map. --descriptor maps the collections
built with `build --descriptor NAME` (each model's own pooling without it): another cache entry, and the
descriptor is named in each map's title. The app's Maps page shows them (start it with --descriptors
MODEL=NAME for a descriptor's maps).
"""


def add_maps_parser(sub, config: RetrievalSettings) -> None:
    from indexer.evaluation.maps import FEATURES, METHODS

    p = _fmt(
        sub,
        "maps",
        "2-D maps of each model's embeddings (UMAP, PCA or t-SNE) with trustworthiness and "
        "per-class silhouette, cached for the app's Maps page",
    )
    p.epilog = MAPS_EXAMPLES + "\n" + EPILOG
    add_lookup_arguments(p)
    _add_models(p, default=None)
    _add_descriptor(p, "map the collections of this descriptor (as built with `build --descriptor`)")
    p.add_argument(
        "--method",
        choices=METHODS,
        default="umap",
        help="umap (default; seeded, so one thread), pca (seconds) or tsne (openTSNE)",
    )
    p.add_argument(
        "--features",
        choices=FEATURES,
        default="raw",
        help="the vectors as stored (raw, default) or unit length (normalized), as evaluate's variants",
    )
    _add_seed(p, "the map and of the samples")
    p.add_argument(
        "--report-dir",
        type=Path,
        default=Path(config.report_dir),
        help="maps go to DIR/maps/ (env RETRIEVAL_REPORT_DIR; default %(default)s, as the app's pages)",
    )
    p.add_argument("--force", action="store_true", help="recompute even when a current map is cached")
    _add_no_progress(p)
    add_store_arguments(p, config)


# robustness: retrieval under transformed queries (indexer/evaluation/robustness.py) ----------------------------------

ROBUSTNESS_EXAMPLES = """robustness examples:
  python -m indexer robustness --split val --models effnet-lite0,effnet-lite1,effnet-lite2 \\
      --data-root ../shared/datasets/tiny-imagenet-200 --report data/report
  python -m indexer robustness --split val --models effnet-lite0,effnet-lite1 --queries 100 \\
      --families translation,thumbnail,jpeg --severities 5 --json robustness.json
  python -m indexer robustness --split val --models effnet-lite0 --families all --no-labels   # label-free only

A rerun embeds only what its cache (<embeddings>/<model>/<dataset>/<split>/robustness/) does not hold yet:
adding families or queries costs only the new ones.
"""


def add_robustness_parser(sub, config: RetrievalSettings) -> None:
    from indexer.evaluation.query_transforms import DEFAULT_FAMILIES, FAMILIES

    p = _fmt(
        sub,
        "robustness",
        "retrieval under transformed queries (shifts, crops, rotations, flips, lower "
        "resolution, JPEG, blur, colour, greyscale, ImageNet-C): copy retrieval, class P@10, "
        "stability and shift consistency per model, family and severity, with CIs",
    )
    p.epilog = ROBUSTNESS_EXAMPLES + "\n" + EPILOG
    add_lookup_arguments(p)
    _add_models(p)
    p.add_argument(
        "--queries",
        type=positive_int,
        default=500,
        help="query images sampled from the split, class-stratified and seeded (default %(default)s)",
    )
    p.add_argument(
        "--families",
        default=",".join(DEFAULT_FAMILIES),
        help=f"comma-separated, or all (default %(default)s); all: {', '.join(FAMILIES)}",
    )
    p.add_argument(
        "--severities",
        type=positive_int,
        default=3,
        help="levels per family, spread from the mildest to the strongest of its five (default %(default)s)",
    )
    p.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="DIR",
        help="write DIR/robustness.json, DIR/robustness.md and one PNG per measure; a comparison report "
        "already in DIR (report.json) gets a Robustness section",
    )
    p.add_argument("--json", type=Path, default=None, help="also write robustness.json here")
    p.add_argument(
        "--no-labels",
        action="store_true",
        help="label-free measures only (copy retrieval, stability, shift consistency)",
    )
    _add_seed(p, "the sample and the random transforms")
    _add_bootstrap(p)
    _add_embeddings(p, "the collections' manifests and the transformed-query cache", config)
    _add_device(p, "queries are embedded")
    p.add_argument(
        "--batch-size", type=positive_int, default=32, help="queries embedded at a time (default %(default)s)"
    )
    _add_no_progress(p)
    add_store_arguments(p, config)


def cmd_maps(args) -> int:
    """One line per map: method, n, trustworthiness, silhouette, seconds, cached or computed."""
    from indexer.catalog import collections_under, find_collection, one_dataset
    from indexer.evaluation.maps import MapParams, compute_map

    store = _store(args)
    descriptor = args.descriptor
    if args.models:
        colls = [find_collection(store, m, args.split, _dataset_arg(args), descriptor) for m in args.models]
    else:
        colls = collections_under(store, args.split, _dataset_arg(args), descriptor)
        if not colls:
            raise StoreError(
                f"no collection for split {args.split!r}{f' under descriptor {descriptor}' if descriptor else ''} in "
                f"{store.describe_target()}: build one first "
                f"({BuildCommand('all', args.split, DIR, descriptor=descriptor.name if descriptor else None)})"
            )
    one_dataset(colls, args.split)
    params = MapParams(method=args.method, features=args.features, seed=args.seed)
    for c in colls:
        result = compute_map(store, c.name, params, args.report_dir, force=args.force, progress=not args.no_progress)
        print(result.line(), flush=True)
    print(f"maps in {args.report_dir / 'maps'} ({params.label()}); images {_labels_line(store, colls[0])}")
    return 0


def _labels_line(store: VectorStore, coll) -> str:
    """How a collection's images are labelled, in words (read from its rows' class ids, no vectors)."""
    from indexer.evaluation.label_free import collection_class_ids

    return coll.meta.labels_text(collection_class_ids(store, coll.name))


def cmd_robustness(args) -> int:
    from indexer.evaluation.query_transforms import UnknownFamily, parse_families
    from indexer.evaluation.robustness import RobustnessConfig, evaluate_collections, output_files, write_outputs

    try:
        families = [f.name for f in parse_families(args.families)]
    except UnknownFamily as e:
        raise StoreError(str(e)) from None
    cfg = RobustnessConfig(
        split=args.split,
        models=args.models,
        dataset=_dataset_arg(args),
        data_root=args.data_root,
        embeddings=args.embeddings,
        queries=args.queries,
        families=families,
        severities=args.severities,
        seed=args.seed,
        resamples=args.bootstrap,
        batch_size=args.batch_size,
        device=args.device,
        labels=not args.no_labels,
        progress=not args.no_progress,
    )
    store = _store(args)
    result = evaluate_collections(store, cfg)
    from indexer.catalog import find_collection

    coll = find_collection(store, cfg.models[0], cfg.split, cfg.dataset)
    print(
        f"{result.dataset}/{result.split}: {_labels_line(store, coll)}"
        + ("" if result.labelled else "; label-free measures only")
    )
    doc = write_outputs(result, args.report, args.json)
    for sentence in result.sentences:
        print(sentence)
    t = result.timing
    print(
        f"{len(result.query_ids)} queries x {len(result.conditions)} conditions x {len(result.models)} models in "
        f"{result.wall_s:.0f} s (embedded now: "
        + ", ".join(f"{m} {n}" for m, n in t.embedded.items())
        + f"; from the cache: {sum(t.from_cache.values())}; embedding {t.embed_s:.0f} s, transforms {t.transform_s:.0f} s, "
        f"search {t.search_s:.0f} s, statistics {t.statistics_s:.0f} s)"
    )
    files = output_files(doc, args.report, args.json)
    if files:  # the last line: every file written, those in one folder after the first by name
        named = [str(files[0])] + [str(f.name if f.parent == files[0].parent else f) for f in files[1:]]
        print(f"wrote {len(files)} files: {', '.join(named)}")
    return 0


ANN_EXAMPLES = """examples (on a Milvus server: Milvus Lite searches exactly and is refused):
  python -m indexer ann --split val --models effnet-lite0,effnet-lite1,effnet-lite2 --uri http://127.0.0.1:19530 \\
      --index HNSW --index-param M=16 --index-param efConstruction=200 --sweep ef=16,32,64,128,256 --report data/ann
  python -m indexer ann --split val --models effnet-lite0,effnet-lite1 --uri http://127.0.0.1:19530 \\
      --index IVF_FLAT --index-param nlist=128 --sweep nprobe=1,4,16,64 --report data/ann     # added to the same section
  python -m indexer ann --split val --models effnet-lite0 --uri http://127.0.0.1:19530 --index IVF_PQ --queries 200 --json ann.json

Each run measures FLAT (the reference) and one index at every --sweep value, for every model, on the same seeded
queries, on a scratch copy of each collection (the collections themselves keep their index). --report DIR writes
DIR/ann.{json,md} and DIR/ann_pareto.png; runs of other index types on the same models and queries are merged into
that section, which the comparison report and the app's Evaluation page show beside the evaluation.
"""


def add_ann_parser(sub, config: RetrievalSettings) -> None:
    p = sub.add_parser(
        "ann",
        help="what an approximate index (HNSW, IVF, PQ) costs each model: recall@10, P@k vs exact, latency",
        description="Does each backbone's ranking survive an approximate index? recall@10 against the exact top 10, "
        "P@1/P@10 under the index beside the exact figures (paired intervals), latency p50/p99 at nq=1, QPS, build "
        "time and memory, per model and search setting; whether the models keep FLAT's order by P@10, and the "
        "cheapest setting at which every model keeps recall@10 >= 0.99.",
        epilog=ANN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--split", required=True, help="split the collections were built from, e.g. val")
    p.add_argument(
        "--models", type=model_list, required=True, help="comma-separated models, each indexed for the split"
    )
    p.add_argument("--data-root", type=Path, default=None, help="choose the dataset when several are indexed")
    p.add_argument(
        "--index",
        type=str.upper,
        required=True,
        choices=[t for t in INDEX_TYPES if t != "FLAT"],
        help="the approximate index to measure (FLAT, the reference, is measured in every run)",
    )
    p.add_argument(
        "--index-param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a build parameter, repeatable, Milvus' names (as for build; defaults are Milvus')",
    )
    p.add_argument(
        "--sweep",
        default=None,
        metavar="PARAM=V1,V2,...",
        help="search values to measure: ef= (HNSW, default 16,32,64,128,256), nprobe= (IVF_*, default 1,4,16,64), "
        "search_list= (DISKANN, default 16,32,64,128)",
    )
    p.add_argument("--queries", type=positive_int, default=1000, help="seeded queries per model (default %(default)s)")
    p.add_argument(
        "--latency-queries", type=positive_int, default=200, help="nq=1 searches timed per point (default %(default)s)"
    )
    p.add_argument(
        "--batch", type=positive_int, default=100, help="queries per search call for QPS (default %(default)s)"
    )
    _add_seed(p, "the queries and the bootstrap")
    p.add_argument("--resamples", type=positive_int, default=2000, help="bootstrap resamples (default %(default)s)")
    p.add_argument("--report", type=Path, default=None, help="write the ANN section into this report folder")
    p.add_argument("--json", type=Path, default=None, help="also write the document as JSON here")
    p.add_argument("--keep-scratch", action="store_true", help="keep the scratch collections (to inspect them)")
    p.add_argument(
        "--build-timeout",
        type=positive_int,
        default=1800,
        metavar="S",
        help="give up on an index not built and loaded within S seconds (default %(default)s)",
    )
    _add_no_progress(p)
    add_store_arguments(p, config)


def cmd_ann(args) -> int:
    from dataclasses import asdict

    from indexer.catalog import find_collection
    from indexer.evaluation.ann import AnnConfig, AnnError, VectorSet, evaluate_ann, write_ann_report
    from indexer.evaluation.document import to_plain
    from indexer.evaluation.metrics import encode_labels
    from indexer.index_spec import default_sweep, make_index_spec, parse_sweep

    spec = make_index_spec(args.index, args.index_param)
    sweep = parse_sweep(args.sweep, args.index) if args.sweep else default_sweep(args.index)
    models = args.models
    # a server search has no memory budget to respect (Lite's is why store.search groups queries): batches go whole
    store = _store(args, search_budget_bytes=1 << 50)
    if store.is_lite:
        from indexer.evaluation.ann import LITE_REFUSAL

        raise AnnError(LITE_REFUSAL)
    found = {m: find_collection(store, m, args.split, _dataset_arg(args)) for m in models}
    if len({c.meta.dataset for c in found.values()}) > 1:
        raise AnnError("the models are indexed for different datasets: pass --data-root to choose one")
    sets = []
    for model, coll in found.items():
        ids, vectors, class_ids, relpaths = store.read_all(coll.name, progress=not args.no_progress)
        sets.append(VectorSet(model, coll.name, coll.meta, ids, vectors, encode_labels(class_ids), class_ids, relpaths))
    cfg = AnnConfig(
        spec,
        sweep,
        queries=args.queries,
        latency_queries=args.latency_queries,
        batch=args.batch,
        seed=args.seed,
        resamples=args.resamples,
        progress=not args.no_progress,
        keep_scratch=args.keep_scratch,
        build_timeout_s=args.build_timeout,
    )
    first = next(iter(found.values())).meta
    doc = evaluate_ann(store, sets, cfg, first.dataset, first.split)
    if args.report:
        doc = write_ann_report(doc, args.report)
        print(f"wrote {args.report / 'ann.md'}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(to_plain(doc), indent=1))
    for sentence in doc.sentences:
        print(sentence)
    log.debug("ann config: %s", asdict(cfg))
    return 0


# the option naming the model(s) of each command that looks collections up: a missing one is answered with the
# same command line on the collections that are indexed. drop is not here: dropping another model is no suggestion
MODEL_OPTIONS = {
    "search": "--model",
    "evaluate": "--models",
    "maps": "--models",
    "robustness": "--models",
    "ann": "--models",
}


def _offering_indexed(handler: Callable[[argparse.Namespace], int], argv: Sequence[str], option: str):
    """``handler``, whose error for a missing collection also gives ``argv`` back runnable on the indexed ones."""
    from indexer.catalog import CollectionNotFound, rerun_on

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except CollectionNotFound as e:
            if not e.alternatives:
                raise
            command = rerun_on(argv, option, e.alternatives)
            raise CollectionNotFound(f"{e}\nOr run it on them: {command}", e.alternatives) from None

    return run


def main(argv: Optional[List[str]] = None) -> int:
    from embed.sources.imaging import BadImage

    line = list(sys.argv[1:] if argv is None else argv)
    handlers = {
        "build": cmd_build,
        "whiten": cmd_whiten,
        "status": cmd_status,
        "search": cmd_search,
        "drop": cmd_drop,
        "serve": cmd_serve,
        "evaluate": cmd_evaluate,
        "maps": cmd_maps,
        "robustness": cmd_robustness,
        "ann": cmd_ann,
    }
    for command, option in MODEL_OPTIONS.items():
        handlers[command] = _offering_indexed(handlers[command], line, option)
    return run_cli(handlers, build_parser, line, extra_errors=(StoreError, BadImage, IndexSpecError))
