"""``python -m indexer``: build, status, search, drop, serve, evaluate."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import List, Optional

from embed.cli import add_compute_arguments, add_data_arguments, add_weights_arguments, extract_config, run_cli
from embed.settings import DEFAULT_DATA_ROOT, DEFAULT_EMBEDDINGS

from .store import DEFAULT_TOKEN, DEFAULT_URI, StoreError, VectorStore

log = logging.getLogger(__name__)

EPILOG = """examples:
  python -m indexer build --model effnet-lite0 --split val --data-root ../shared/datasets/tiny-imagenet-200
  python -m indexer build --model all --split val --data-root /data/imagenet --device cuda
  python -m indexer build --model gresnet --split val --checkpoint gresnet50.pth
  python -m indexer status
  python -m indexer search --model effnet-lite0 --split val --image query.jpg -k 5
  python -m indexer evaluate --split val --models effnet-lite0 --data-root ../shared/datasets/tiny-imagenet-200 --plot p.png
  python -m indexer serve --port 19530          # then: --uri http://127.0.0.1:19530 everywhere
  python -m indexer build --model vit --split val --uri http://milvus.internal:19530 --token user:password

The database defaults to Milvus Lite in data/milvus.db (env RETRIEVAL_MILVUS_URI overrides it).
"""


EVALUATE_EXAMPLES = """evaluate examples:
  python -m indexer evaluate --split val --models effnet-lite0,effnet-lite1,effnet-lite2 \\
      --data-root ../shared/datasets/tiny-imagenet-200 --holdout 0.2 --milvus-check 200 --report docs/report
  python -m indexer evaluate --models gresnet,convnext,vit --split val --database-split train --query-split val \\
      --data-root /data/imagenet --report report/
  python -m indexer evaluate --simulate-rows 1280000 --dim 2048 --queries 50000    # DINO kNN dry run
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
    p.add_argument("--model", required=True, help="gresnet, convnext, vit, effnet-lite0, timm:<name>, or all")
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

    p = _fmt(sub, "evaluate", "precision@k, recall@k, R-precision, MAP@R, kNN accuracy (leave-one-out); "
                              "--report DIR adds CIs, paired tests, per-class, agreement, style, DINO kNN, galleries")
    p.epilog = EVALUATE_EXAMPLES + "\n" + EPILOG
    p.add_argument("--split", default=None, help="split the collections were built from (required unless --simulate-rows)")
    p.add_argument("--data-root", type=Path, default=Path(DEFAULT_DATA_ROOT))
    p.add_argument("--models", default="gresnet,convnext,vit", help="comma-separated (default %(default)s)")
    p.add_argument("--k", default="1,5,10,20,100", help="comma-separated cut-offs (default %(default)s)")
    p.add_argument("--features", default="raw,normalized",
                   help="raw, normalized or both (default both; the report compares models on the first)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", type=Path, default=None, help="write the report as JSON")
    p.add_argument("--csv", type=Path, default=None, help="write the results as CSV")
    p.add_argument("--plot", type=Path, default=None, help="write precision@k vs k as PNG")
    p.add_argument("--milvus-check", type=int, default=0, metavar="N",
                   help="also search N random queries through Milvus (both feature variants) and require the same "
                        "neighbour lists as a float64 brute force, ties within relative 1e-6 aside")
    p.add_argument("--time-naive", type=int, default=0, metavar="N",
                   help="also time a naive evaluation sending N single-query Milvus searches (ratio vs exact)")
    p.add_argument("--no-progress", action="store_true")
    g = p.add_argument_group("comparison report (--report)")
    g.add_argument("--report", type=Path, default=None, metavar="DIR",
                   help="write DIR/report.html (self-contained), DIR/report.json and DIR/report.md")
    g.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (at least 1000; default %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="seed for resampling, holdout and sampling (default 0)")
    g.add_argument("--style-queries", type=int, default=500,
                   help="queries sampled for the colour/structure similarity measure (default %(default)s)")
    g.add_argument("--galleries", type=int, default=8, help="disagreement galleries to draw (default %(default)s)")
    g.add_argument("--embeddings", type=Path, default=Path(DEFAULT_EMBEDDINGS),
                   help="embeddings root where `python -m embed check` saved check.json (default %(default)s)")
    g = p.add_argument_group("DINO-style kNN (weighted 20-NN, T = 0.07, database and queries disjoint)")
    g.add_argument("--holdout", type=float, default=0.0, metavar="FRACTION",
                   help="hold out this fraction of every class of --split as queries, the rest is the database (e.g. 0.2)")
    g.add_argument("--database-split", default=None, help="database split, e.g. train (with --query-split)")
    g.add_argument("--query-split", default=None, help="query split, e.g. val (with --database-split)")
    g.add_argument("--chunk-rows", type=int, default=65536, help="database rows per streamed chunk (default %(default)s)")
    g.add_argument("--simulate-rows", type=int, default=0, metavar="N",
                   help="dry run: time a sample of a simulated N-row database, print projected time and peak memory")
    g.add_argument("--dim", type=int, default=2048, help="dimension for --simulate-rows (default %(default)s)")
    g.add_argument("--queries", type=int, default=10000, help="queries for --simulate-rows (default %(default)s)")
    add_store_arguments(p)
    return parser


def _models_for_build(args) -> List[str]:
    from embed.registry import REGISTRY, weights_available
    if args.model != "all":
        return [args.model]
    if args.checkpoint:
        raise StoreError("--checkpoint names one model's weights: use it with one --model, not all")
    chosen = []
    for name in REGISTRY:
        ok, where = weights_available(name)
        if ok or args.random_init or where.startswith("hub download"):
            chosen.append(name)
        else:
            log.warning("skipping %s: %s (pass --random-init to include it with random weights)", name, where)
    return chosen


def cmd_build(args) -> int:
    from embed.registry import WeightsUnavailable
    from .build import build
    store = _store(args)
    failures = []
    for model in _models_for_build(args):
        cfg = extract_config(args, model=model)
        try:
            result = build(cfg, store, normalize=args.normalize, recreate=args.recreate, progress=not args.no_progress)
        except WeightsUnavailable as e:
            if args.model != "all":
                raise
            log.error("%s: %s", model, e)
            failures.append(model)
            continue
        print(json.dumps({"collection": result.collection, "rows": result.rows, "inserted": result.inserted,
                          "skipped_images": result.skipped_images, "already_complete": result.already_complete,
                          "insert_rows_per_s": round(result.rows_per_s, 1), "weights": result.weights}))
    return 1 if failures else 0


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
    if args.simulate_rows:
        from .knn import dry_run
        result = dry_run(args.simulate_rows, args.dim, args.queries, args.chunk_rows,
                         device="cpu" if args.device == "auto" else args.device, seed=args.seed)
        print("\n".join(result.lines()))
        if args.json:
            from dataclasses import asdict
            args.json.write_text(json.dumps(asdict(result), indent=1))
        return 0
    from .evaluate import EvalConfig, evaluate_runs, markdown_table, write_csv, write_json, write_plot
    if not args.split:
        raise StoreError("--split is required (the split the collections were built from, e.g. val)")
    if bool(args.database_split) != bool(args.query_split):
        raise StoreError("--database-split and --query-split go together (e.g. --database-split train --query-split val)")
    if args.holdout and not 0 < args.holdout < 1:
        raise StoreError(f"--holdout takes a fraction between 0 and 1, e.g. 0.2 (got {args.holdout})")
    if args.report and args.bootstrap < 1000:
        raise StoreError(f"--bootstrap needs at least 1000 resamples for a 95% interval (got {args.bootstrap})")
    dataset = Path(args.data_root).expanduser().resolve().name
    ks = [int(k) for k in args.k.split(",")]
    if args.report:   # the report compares P@1 and P@10
        ks = sorted(set(ks) | {1, 10})
    cfg = EvalConfig(split=args.split, dataset=dataset, models=[m.strip() for m in args.models.split(",") if m.strip()],
                     ks=ks, features=[f.strip() for f in args.features.split(",")],
                     device=args.device, milvus_check=args.milvus_check, time_naive=args.time_naive,
                     seed=args.seed, progress=not args.no_progress, holdout=args.holdout,
                     database_split=args.database_split, query_split=args.query_split, chunk_rows=args.chunk_rows)
    bad = [f for f in cfg.features if f not in ("raw", "normalized")]
    if bad or any(k < 1 for k in cfg.ks):
        raise StoreError(f"--features takes raw,normalized and --k positive integers (got {args.features!r}, {args.k!r})")
    report, runs = evaluate_runs(cfg, _store(args))
    print(markdown_table(report))
    for path, writer in ((args.json, write_json), (args.csv, write_csv), (args.plot, write_plot)):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            writer(report, path)
            print(f"wrote {path}")
    if args.report:
        from .report import ReportConfig, build_report
        data_root = Path(args.data_root).expanduser().resolve()
        rcfg = ReportConfig(out=args.report, data_root=data_root if (data_root / args.split).is_dir() else None,
                            split=args.split, embeddings=args.embeddings, resamples=args.bootstrap, seed=args.seed,
                            style_queries=args.style_queries, galleries=args.galleries)
        doc = build_report(report, runs, rcfg)
        for sentence in doc["sentences"]:
            print(sentence)
        print(f"wrote {args.report / 'report.html'}, report.json and report.md")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    from embed.imaging import BadImage
    handlers = {"build": cmd_build, "status": cmd_status, "search": cmd_search, "drop": cmd_drop,
                "serve": cmd_serve, "evaluate": cmd_evaluate}
    return run_cli(handlers, build_parser(), argv, extra_errors=(StoreError, BadImage))
