"""``python -m embed``: extract features, check weights, list models."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional

from embed.common.cli_args import (
    CommandParser,
    add_compute_arguments,
    add_data_arguments,
    add_weights_arguments,
    check_inputs,
    descriptor_list,
    extract_config,
    positive_int,
    resolve_data_root,
    run_cli,
)
from embed.common.settings import RetrievalSettings

# Nothing heavy is imported at module level: `--help` and argument errors are answered without torch,
# timm or pymilvus (see benchmarks/help_startup.py); every command imports what it needs when it runs.
log = logging.getLogger(__name__)

EPILOG = """examples:
  python -m embed models
  python -m embed extract --model effnet-lite0 --split val --data-root ../shared/datasets/tiny-imagenet-200 --limit 1000
  python -m embed extract --model convnext --split val --data-root /data/imagenet --device cuda --batch-size 256
  python -m embed extract --model effnet-lite2 --split val --dataset imagenette     # downloads it once
  python -m embed extract --model gresnet --split val --checkpoint gresnet50.pth
  python -m embed check --model effnet-lite1 --split val --data-root ../shared/datasets/tiny-imagenet-200 --limit 500
  torchrun --nproc-per-node 4 -m embed extract --model vit --split train --data-root /data/imagenet
"""


EXTRACT_EXAMPLES = """examples:
  python -m embed extract --model effnet-lite0 --split val --data-root ../shared/datasets/tiny-imagenet-200 --limit 1000
  python -m embed extract --model effnet-lite2 --split val --dataset imagenette     # downloads it once
  python -m embed extract --model effnet-lite0 --split val --data-root DIR --descriptors avg,gem3   # one forward pass
  python -m embed extract --model convnext --split val --data-root /data/imagenet --device cuda --batch-size 256
  torchrun --nproc-per-node 4 -m embed extract --model vit --split train --data-root /data/imagenet
"""
CHECK_EXAMPLES = """examples:
  python -m embed check --model effnet-lite1 --split val --data-root ../shared/datasets/tiny-imagenet-200 --limit 500
  python -m embed check --model gresnet --split val --data-root /data/imagenet --checkpoint gresnet50.pth --json
"""
MODELS_EXAMPLES = """examples:
  python -m embed models
  python -m embed models --json
"""


def build_parser(config: RetrievalSettings) -> argparse.ArgumentParser:
    """The command line, its defaults from ``config`` (run_cli reads it once)."""
    parser = CommandParser(
        prog="python -m embed",
        description="Extract pooled backbone features (classifier heads removed).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "extract",
        help="embed a split into data/embeddings (resumable)",
        epilog=EXTRACT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="gresnet, convnext, vit, effnet-lite0/1/2 or timm:<name>")
    add_data_arguments(p, config)
    add_weights_arguments(p)
    add_compute_arguments(p, config)
    p.add_argument(
        "--descriptors",
        type=descriptor_list,
        default=None,
        help="poolings to store from the same forward pass, each as its own shard set, e.g. avg,gem3 or cls,gem3 "
        "(default: the model's own pooling; post-processing such as -l2 or -white is applied later, to these; "
        "`python -m embed models` lists each model's poolings)",
    )
    p.add_argument(
        "--compare-forward",
        action="store_true",
        help="after the run, also time the bare model forward at the same batch size",
    )

    p = sub.add_parser(
        "check",
        help="are the weights real? top-1/top-5 of the model's ImageNet classifier on images of ImageNet classes",
        epilog=CHECK_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="a registry name or timm:<name> with an ImageNet-1k head")
    add_data_arguments(p, config)
    add_weights_arguments(p)
    p.add_argument(
        "--out",
        type=Path,
        default=Path(config.embeddings),
        help="embeddings folder; the result goes to <out>/<model>/<dataset>/<split>/check.json (default %(default)s)",
    )
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass (default %(default)s)")
    p.add_argument("--workers", type=int, default=None, help="image decoding processes (default: by device and cores)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser(
        "models",
        help="list the models, their dims, input sizes and weights availability",
        epilog=MODELS_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def cmd_models(args) -> int:
    from embed.models.catalog import REGISTRY  # the catalogue: no torch, no timm
    from embed.models.weights import weights_available

    rows = []
    for name, spec in REGISTRY.items():
        available, where = weights_available(name, args.settings)
        size = spec.input_size or "?"
        rows.append(
            {
                "name": name,
                "timm": spec.timm_name,
                "dim": spec.dim,
                "input_size": size,
                "weights_here": available,
                "weights": where,
                "title": spec.title,
                "default_pooling": spec.default_pooling,
                "poolings": spec.poolings,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'name':14} {'dim':>5} {'input':>5}  {'weights here':12} {'timm model':34} where")
    for r in rows:
        print(
            f"{r['name']:14} {r['dim']:>5} {r['input_size']:>5}  {'yes' if r['weights_here'] else 'no':12} "
            f"{r['timm']:34} {r['weights']}"
        )
    print("\npoolings (--descriptors; the first is the default: the model's own pre-logits, as always stored):")
    for r in rows:
        print(f"  {r['name']:14} {r['poolings']}")
    print(
        "descriptor = pooling + optional post-processing: -l2 (unit length) or -white[<dim>] (PCA-whitening learned "
        "on other images), e.g. avg, gem3, gem3-l2, gem3-white512 (docs/descriptors.md)"
    )
    print("\nany timm model also works as timm:<name>, e.g. timm:resnet50d.ra2_in1k")
    return 0


def cmd_extract(args) -> int:
    check_inputs(args)  # before torch loads with the modules below
    from embed.extraction import distributed
    from embed.extraction.embedder import default_batch_size
    from embed.extraction.extract import extract_poolings, load_embedder

    cfg = extract_config(args)
    results = extract_poolings(cfg)
    result = results[0]
    summary = {
        "model": cfg.model,
        "images": result.n_images,
        "embedded": result.n_embedded,
        "computed": result.n_computed,
        "skipped": len(result.skipped),
        "seconds": round(result.seconds, 2),
        "images_per_s": round(result.images_per_s, 2),
        "folder": str(result.folder),
        "weights": result.weights,
    }
    if len(results) > 1:
        summary["folders"] = [str(r.folder) for r in results]
    if args.compare_forward:
        emb = load_embedder(cfg)  # the model, weights and poolings the extraction above ran
        bs = cfg.batch_size or default_batch_size(emb.device)
        size = emb.loaded.data_config["input_size"][-1]
        fwd = emb.time_forward(bs, size)
        summary["bare_forward_images_per_s"] = round(fwd, 2)
        if result.images_per_s:
            summary["pipeline_efficiency"] = round(result.images_per_s / fwd, 3)
    if distributed.rank_and_world()[0] == 0:
        print(json.dumps(summary))
    distributed.finish()
    return 0


def cmd_check(args) -> int:
    check_inputs(args)
    from embed.models.accuracy_check import AccuracyCheckConfig, measure_accuracy, save_accuracy

    result = measure_accuracy(
        AccuracyCheckConfig(
            model=args.model,
            split=args.split,
            data_root=resolve_data_root(args),
            limit=args.limit,
            checkpoint=args.checkpoint,
            random_init=args.random_init,
            batch_size=args.batch_size,
            workers=args.workers,
            device=args.device,
            progress=not args.no_progress,
            settings=args.settings,
        )
    )
    path = save_accuracy(result, args.out)
    if args.json:
        print(json.dumps({**asdict(result), "saved": str(path)}, indent=1))
    else:
        random = "  RANDOM WEIGHTS" if result.weights_source == "random" else ""
        print(
            f"{result.model} on {result.dataset}/{result.split}: top-1 {result.top1:.3f}  top-5 {result.top5:.3f}  "
            f"({result.n} images, weights {result.weights_source} {result.weights_fingerprint[:23]}){random}"
        )
        print(f"saved {path}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run_cli({"extract": cmd_extract, "check": cmd_check, "models": cmd_models}, build_parser, argv)
