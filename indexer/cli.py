"""``python -m indexer``: build, status, search, drop, serve, evaluate."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

from embed.cli import add_compute_arguments, add_data_arguments, add_weights_arguments, extract_config, run_cli
from embed.settings import DEFAULT_DATA_ROOT

from .store import DEFAULT_TOKEN, DEFAULT_URI, StoreError, VectorStore

log = logging.getLogger(__name__)

EPILOG = """examples:
  python -m indexer build --model effnet-lite0 --split val --data-root ../shared/datasets/tiny-imagenet-200
  python -m indexer build --model all --split val --dataset tiny-imagenet --limit 2000   # the quick start
  python -m indexer build --model all --split val --data-root /data/imagenet --device cuda
  python -m indexer build --model gresnet --split val --checkpoint gresnet50.pth
  python -m indexer status
  python -m indexer search --model effnet-lite0 --split val --image query.jpg -k 5
  python -m indexer evaluate --split val --models effnet-lite0 --data-root ../shared/datasets/tiny-imagenet-200 --plot p.png
  python -m indexer serve --port 19530          # then: --uri http://127.0.0.1:19530 everywhere
  python -m indexer build --model vit --split val --uri http://milvus.internal:19530 --token user:password

The database defaults to Milvus Lite in data/milvus.db (env RETRIEVAL_MILVUS_URI overrides it).
"""


def add_store_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("vector store")
    g.add_argument("--uri", default=DEFAULT_URI,
                   help="Milvus Lite folder ending in .db, or http://host:19530 for a Milvus server / Zilliz Cloud "
                        "(env RETRIEVAL_MILVUS_URI; default %(default)s)")
    g.add_argument("--token", default=DEFAULT_TOKEN, help="user:password or API key (env RETRIEVAL_MILVUS_TOKEN)")


def add_collection_arguments(p: argparse.ArgumentParser) -> None:
    """Which collection: model + split (+ data root when several datasets are indexed), and where."""
    p.add_argument("--model", required=True, help="registry name, e.g. gresnet, convnext, vit, effnet-lite0")
    p.add_argument("--split", required=True, help="split the collection was built from, e.g. val")
    p.add_argument("--data-root", type=Path, default=None, help="choose the dataset when several are indexed")
    add_store_arguments(p)


def _store(args) -> VectorStore:
    return VectorStore(args.uri, args.token)


def _fmt(p: argparse.ArgumentParser, name: str, help_: str, **kw) -> argparse.ArgumentParser:
    return p.add_parser(name, help=help_, description=help_, epilog=EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter, **kw)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m indexer", description="Per-model Milvus collections (FLAT, L2).",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = _fmt(sub, "build", "extract (reusing cached embeddings) and index a split")
    p.add_argument("--model", required=True,
                   help="gresnet, convnext, vit, effnet-lite0/1/2, timm:<name>, or all (every model with real weights)")
    p.add_argument("--normalize", action="store_true", help="store unit-length vectors (L2 ranking == cosine)")
    p.add_argument("--recreate", action="store_true", help="drop and rebuild a collection built differently")
    add_data_arguments(p)
    add_weights_arguments(p)
    add_compute_arguments(p)
    add_store_arguments(p)

    p = _fmt(sub, "status", "list collections: model, split, dataset, rows, dim, index, metric, weights")
    p.add_argument("--json", action="store_true")
    add_store_arguments(p)

    p = _fmt(sub, "search", "top-k neighbours of an image file")
    add_collection_arguments(p)
    p.add_argument("--image", type=Path, required=True, help="query image file")
    p.add_argument("-k", type=int, default=10, help="number of neighbours (default %(default)s)")
    p.add_argument("--checkpoint", type=Path, default=None, help="weights file, if the collection was built with one")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")

    p = _fmt(sub, "drop", "delete a model's collection")
    add_collection_arguments(p)

    p = _fmt(sub, "serve", "serve a Milvus Lite database on 127.0.0.1 so several processes can share it")
    p.add_argument("--port", type=int, default=19530)
    p.add_argument("--host", default="127.0.0.1",
                   help="bind address (default 127.0.0.1; 0.0.0.0 exposes the database to the network, unauthenticated)")
    p.add_argument("--data-dir", default=DEFAULT_URI, help="Milvus Lite database folder (default %(default)s)")

    p = _fmt(sub, "evaluate", "precision@k, recall@k, R-precision, MAP@R, kNN accuracy (leave-one-out)")
    p.add_argument("--split", required=True)
    p.add_argument("--data-root", type=Path, default=Path(DEFAULT_DATA_ROOT))
    p.add_argument("--models", default="gresnet,convnext,vit", help="comma-separated (default %(default)s)")
    p.add_argument("--k", default="1,5,10,20,100", help="comma-separated cut-offs (default %(default)s)")
    p.add_argument("--features", default="raw,normalized", help="raw, normalized or both (default both)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", type=Path, default=None, help="write the report as JSON")
    p.add_argument("--csv", type=Path, default=None, help="write the results as CSV")
    p.add_argument("--plot", type=Path, default=None, help="write precision@k vs k as PNG")
    p.add_argument("--milvus-check", type=int, default=0, metavar="N",
                   help="also search N random queries through Milvus and require the same neighbours")
    p.add_argument("--time-naive", type=int, default=0, metavar="N",
                   help="also time a naive evaluation sending N single-query Milvus searches (ratio vs exact)")
    p.add_argument("--no-progress", action="store_true")
    add_store_arguments(p)
    return parser


def _models_for_build(args) -> List[str]:
    """One model, or for ``all`` every registry model whose real weights can be had here (each other one: a line why)."""
    from embed.registry import REGISTRY, weights_obtainable
    if args.model != "all":
        return [args.model]
    if args.checkpoint:
        raise StoreError("--checkpoint names one model's weights: use it with one --model, not all")
    chosen = []
    for name in REGISTRY:
        ok, why = weights_obtainable(name)
        if ok or args.random_init:
            chosen.append(name)
        else:
            print(f"skipping {name}: {why}", file=sys.stderr)
    return chosen


def cmd_build(args) -> int:
    """Exit 0 when at least one model was built (``all`` skips the ones without weights), 2 when none was."""
    from embed.cli import resolve_data_root
    from embed.registry import WeightsUnavailable
    from .build import build
    store = _store(args)
    resolve_data_root(args)  # download a named --dataset once, before the first model
    built = 0
    for model in _models_for_build(args):
        cfg = extract_config(args, model=model)
        try:
            result = build(cfg, store, normalize=args.normalize, recreate=args.recreate, progress=not args.no_progress)
        except WeightsUnavailable as e:
            if args.model != "all":
                raise
            print(f"skipping {model}: {' '.join(str(e).split())}", file=sys.stderr)
            continue
        built += 1
        print(json.dumps({"collection": result.collection, "rows": result.rows, "inserted": result.inserted,
                          "skipped_images": result.skipped_images, "already_complete": result.already_complete,
                          "insert_rows_per_s": round(result.rows_per_s, 1), "weights": result.weights}))
    if not built:
        print("error: no model was built: none has real weights here (see the lines above); "
              "use --random-init to build with random weights", file=sys.stderr)
        return 2
    return 0


def cmd_status(args) -> int:
    from .query import indexed_collections
    store = _store(args)
    rows = []
    for c in indexed_collections(store):
        d = store.describe(c.name)
        rows.append({"collection": c.name, "model": c.meta.model, "split": c.meta.split, "dataset": c.meta.dataset,
                     "rows": d["rows"], "dim": c.meta.dim, "index_type": d["index_type"], "metric": d["metric"],
                     "normalized": c.meta.normalized, "complete": c.meta.complete,
                     "weights": c.meta.weights_source, "weights_fingerprint": c.meta.weights_fingerprint})
    if args.json:
        print(json.dumps({"uri": store.uri, "collections": rows}, indent=1))
        return 0
    print(f"{store.describe_target()}: {len(rows)} collection(s)")
    for r in rows:
        flag = "" if r["complete"] else "  (INCOMPLETE: rerun build)"
        rnd = "  RANDOM WEIGHTS" if r["weights"] == "random" else ""
        print(f"  {r['collection']:45} {r['model']:13} {r['dataset']}/{r['split']:6} rows={r['rows']:<8} "
              f"dim={r['dim']:<5} {r['index_type']}/{r['metric']} {r['weights_fingerprint'][:23]}{rnd}{flag}")
    return 0


def _dataset_arg(args) -> Optional[str]:
    return Path(args.data_root).expanduser().resolve().name if args.data_root else None


def cmd_search(args) -> int:
    from embed.datasets import class_name
    from embed.imaging import load_rgb
    from .query import embed_query, embedder_for, find_collection
    store = _store(args)
    coll = find_collection(store, args.model, args.split, _dataset_arg(args))
    image = load_rgb(args.image)
    emb = embedder_for(coll.meta, args.checkpoint, args.device)
    hits = store.search(coll.name, embed_query(emb, image, coll.meta), k=args.k)[0]
    for h in hits:
        h["class_name"] = class_name(h["class_id"] or "")
        h["path"] = str(Path(coll.meta.data_root) / coll.meta.split / h["relpath"])
    if args.json:
        print(json.dumps({"collection": coll.name, "distance": "squared L2", "random_weights": coll.meta.is_random,
                          "hits": hits}, indent=1))
        return 0
    if coll.meta.is_random:
        print("WARNING: this collection was built with RANDOM weights")
    print(f"top {len(hits)} in {coll.name} (distance = squared L2):")
    for rank, h in enumerate(hits, 1):
        print(f"{rank:3}. id={h['id']:<7} d²={h['distance']:<12.4f} {h['class_id']} ({h['class_name']})  {h['path']}")
    return 0


def cmd_drop(args) -> int:
    from .query import find_collection
    store = _store(args)
    coll = find_collection(store, args.model, args.split, _dataset_arg(args))
    store.drop(coll.name)
    print(f"dropped {coll.name}")
    return 0


def cmd_serve(args) -> int:
    from .serve import serve
    return serve(args.data_dir, args.host, args.port)


def cmd_evaluate(args) -> int:
    from .evaluate import EvalConfig, evaluate, markdown_table, write_csv, write_json, write_plot
    store = _store(args)
    dataset = Path(args.data_root).expanduser().resolve().name
    cfg = EvalConfig(split=args.split, dataset=dataset, models=[m.strip() for m in args.models.split(",") if m.strip()],
                     ks=[int(k) for k in args.k.split(",")], features=[f.strip() for f in args.features.split(",")],
                     device=args.device, milvus_check=args.milvus_check, time_naive=args.time_naive,
                     progress=not args.no_progress)
    bad = [f for f in cfg.features if f not in ("raw", "normalized")]
    if bad or any(k < 1 for k in cfg.ks):
        raise StoreError(f"--features takes raw,normalized and --k positive integers (got {args.features!r}, {args.k!r})")
    report = evaluate(cfg, store)
    print(markdown_table(report))
    for path, writer in ((args.json, write_json), (args.csv, write_csv), (args.plot, write_plot)):
        if path:
            writer(report, path)
            print(f"wrote {path}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    from embed.imaging import BadImage
    handlers = {"build": cmd_build, "status": cmd_status, "search": cmd_search, "drop": cmd_drop,
                "serve": cmd_serve, "evaluate": cmd_evaluate}
    return run_cli(handlers, build_parser(), argv, extra_errors=(StoreError, BadImage))
