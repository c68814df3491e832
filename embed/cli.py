"""``python -m embed``: extract features, check weights, list models."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional

from .quiet import quiet_grpc_environment, quiet_third_party_logs  # noqa: F401  (re-exported for benchmarks)
from .settings import DEFAULT_DATA_ROOT, DEFAULT_EMBEDDINGS

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


def _int_at_least(minimum: int, what: str):
    """An argparse type: an integer >= ``minimum``, so that `-k abc` or `--limit 0` is a usage error, not a traceback."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value
    return parse


positive_int = _int_at_least(1, "a positive integer")
non_negative_int = _int_at_least(0, "an integer >= 0")


def port_number(text: str) -> int:
    value = non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is at most 65535, got {value}")
    return value


def positive_int_list(text: str) -> List[int]:
    """argparse type for comma-separated cut-offs such as ``1,5,10``."""
    parts = [t.strip() for t in text.split(",") if t.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("expected comma-separated positive integers, e.g. 1,5,10")
    try:
        return [positive_int(t) for t in parts]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers (e.g. 1,5,10), "
                                         f"got {text!r}") from None


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--split", required=True, help="split folder under the data root, e.g. val")
    g.add_argument("--data-root", type=Path, default=None,
                   help="folder holding the split folders; always wins over --dataset, nothing is downloaded "
                        f"(env RETRIEVAL_DATA_ROOT; default {DEFAULT_DATA_ROOT})")
    g.add_argument("--dataset", default=None, metavar="NAME",
                   help="tiny-imagenet or imagenette: found in data/datasets or ../shared/datasets (env "
                        "RETRIEVAL_DATASETS), else downloaded there once (checksum verified)")
    g.add_argument("--limit", type=positive_int, default=None, help="only the first N images in canonical (sorted path) order")


def add_weights_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("weights")
    g.add_argument("--checkpoint", type=Path, default=None,
                   help="local weights file (.pth/.pt/.bin or .safetensors; raw or under model/state_dict/model_ema)")
    g.add_argument("--random-init", action="store_true",
                   help="run with random weights when none are available (every output says so)")


def add_compute_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("compute")
    g.add_argument("--out", type=Path, default=Path(DEFAULT_EMBEDDINGS),
                   help="embeddings folder (env RETRIEVAL_EMBEDDINGS; default %(default)s)")
    g.add_argument("--batch-size", type=positive_int, default=None, help="default: 256 on GPU, 32 on CPU")
    g.add_argument("--workers", type=non_negative_int, default=None, help="image decoding processes (default: by device and cores)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    g.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="autocast precision; auto = the fastest measured: bf16 on GPUs and on CPUs with native bf16 "
                        "(AVX512-BF16/AMX), else fp32")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format (default: on for convnets)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (slow start, faster long runs)")
    g.add_argument("--decode", default="auto", choices=["auto", "workers", "device"],
                   help="workers: PIL decodes and resizes in DataLoader processes; device: resize/crop/normalise "
                        "run batched on the model's device, JPEGs decoded there too on a GPU (nvJPEG). "
                        "auto (default): the fastest measured; device on a CPU for small images that are "
                        "enlarged (e.g. Tiny-ImageNet), workers otherwise")
    g.add_argument("--shard-size", type=positive_int, default=1024, help="images per shard file (resume granularity)")
    g.add_argument("--force", action="store_true", help="recompute embeddings even if they are on disk")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def resolve_data_root(args: argparse.Namespace) -> Path:
    """--data-root if given (nothing downloaded), else the named --dataset (downloaded once), else the default."""
    if args.data_root is None:
        if args.dataset:
            from .dataset_download import ensure_dataset
            args.data_root = ensure_dataset(args.dataset, progress=not getattr(args, "no_progress", False))
            args.dataset = None  # resolved: later calls see a plain data root
        else:
            args.data_root = Path(DEFAULT_DATA_ROOT)
    elif args.dataset:
        log.info("--data-root %s given: --dataset %s is not looked up or downloaded", args.data_root, args.dataset)
    return args.data_root


def extract_config(args: argparse.Namespace, model: Optional[str] = None):
    from .extract import ExtractConfig
    return ExtractConfig(
        model=model or args.model, split=args.split, data_root=resolve_data_root(args), out=args.out,
        batch_size=args.batch_size, workers=args.workers, device=args.device, precision=args.precision,
        channels_last=args.channels_last, compile=args.compile, decode=args.decode, limit=args.limit, checkpoint=args.checkpoint,
        random_init=args.random_init, force=args.force, shard_size=args.shard_size, progress=not args.no_progress,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m embed", description="Extract pooled backbone features (classifier heads removed).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("extract", help="embed a split into data/embeddings (resumable)", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="gresnet, convnext, vit, effnet-lite0/1/2 or timm:<name>")
    add_data_arguments(p)
    add_weights_arguments(p)
    add_compute_arguments(p)
    p.add_argument("--compare-forward", action="store_true",
                   help="after the run, also time the bare model forward at the same batch size")

    p = sub.add_parser("check", help="are the weights real? top-1/top-5 of the model's ImageNet classifier on "
                                     "images of ImageNet classes", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a registry name or timm:<name> with an ImageNet-1k head")
    add_data_arguments(p)
    add_weights_arguments(p)
    p.add_argument("--out", type=Path, default=Path(DEFAULT_EMBEDDINGS),
                   help="embeddings folder; the result goes to <out>/<model>/<dataset>/<split>/check.json "
                        "(default %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass (default %(default)s)")
    p.add_argument("--workers", type=int, default=None, help="image decoding processes (default: by device and cores)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("models", help="list the models, their dims, input sizes and weights availability")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def cmd_models(args) -> int:
    from .registry import REGISTRY, weights_available
    import timm
    rows = []
    for name, spec in REGISTRY.items():
        available, where = weights_available(name)
        cfg = timm.models.get_pretrained_cfg(spec.timm_name)
        size = cfg.input_size[-1] if cfg else "?"
        rows.append({"name": name, "timm": spec.timm_name, "dim": spec.dim, "input_size": size,
                     "weights_here": available, "weights": where, "title": spec.title})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'name':14} {'dim':>5} {'input':>5}  {'weights here':12} {'timm model':34} where")
    for r in rows:
        print(f"{r['name']:14} {r['dim']:>5} {r['input_size']:>5}  {'yes' if r['weights_here'] else 'no':12} "
              f"{r['timm']:34} {r['weights']}")
    print("\nany timm model also works as timm:<name>, e.g. timm:resnet50d.ra2_in1k")
    return 0


def cmd_extract(args) -> int:
    from . import distributed
    from .embedder import build_embedder, default_batch_size
    from .extract import extract
    cfg = extract_config(args)
    result = extract(cfg)
    summary = {"model": cfg.model, "images": result.n_images, "embedded": result.n_embedded,
               "computed": result.n_computed, "skipped": len(result.skipped),
               "seconds": round(result.seconds, 2), "images_per_s": round(result.images_per_s, 2),
               "folder": str(result.folder), "weights": result.weights}
    if args.compare_forward:
        emb = build_embedder(cfg.model, cfg.checkpoint, cfg.random_init, cfg.device, cfg.precision,
                             cfg.channels_last, cfg.compile)
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
    from .check import CheckConfig, run_check, save_check
    result = run_check(CheckConfig(
        model=args.model, split=args.split, data_root=resolve_data_root(args), limit=args.limit, checkpoint=args.checkpoint,
        random_init=args.random_init, batch_size=args.batch_size, workers=args.workers, device=args.device,
        progress=not args.no_progress))
    path = save_check(result, args.out)
    if args.json:
        print(json.dumps({**asdict(result), "saved": str(path)}, indent=1))
    else:
        random = "  RANDOM WEIGHTS" if result.weights_source == "random" else ""
        print(f"{result.model} on {result.dataset}/{result.split}: top-1 {result.top1:.3f}  top-5 {result.top5:.3f}  "
              f"({result.n} images, weights {result.weights_source} {result.weights_fingerprint[:23]}){random}")
        print(f"saved {path}")
    return 0


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    quiet_third_party_logs()


def run_cli(handlers, parser: argparse.ArgumentParser, argv: Optional[List[str]], extra_errors: tuple = ()) -> int:
    """Parse, dispatch, and turn expected failures into one clear line and exit code 2."""
    args = parser.parse_args(argv)  # first: --help and usage errors need none of the imports below
    quiet_grpc_environment()
    setup_logging(getattr(args, "verbose", False))
    from .datasets import DatasetError
    from .registry import UnknownModel, WeightsUnavailable
    from .checkpoint_mapping import CheckpointMismatchError
    from .download import DownloadError
    from .keys import InvalidName
    from .store import StoreMismatch
    expected = (DatasetError, InvalidName, WeightsUnavailable, CheckpointMismatchError, DownloadError, StoreMismatch,
                FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
    try:
        return handlers[args.command](args)
    except expected + tuple(extra_errors) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        # disk full, read-only folder: an expected condition with a plain message
        print(f"error: {e.strerror or e}: {getattr(e, 'filename', '') or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished shards are kept; rerun the same command to resume", file=sys.stderr)
        return 130


def main(argv: Optional[List[str]] = None) -> int:
    return run_cli({"extract": cmd_extract, "check": cmd_check, "models": cmd_models}, build_parser(), argv)
