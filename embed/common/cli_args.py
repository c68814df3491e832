"""The command-line toolkit both CLIs share: argument types, argument groups, logging set-up, dispatch.

Imports nothing heavy at module level: `--help` and usage errors are answered without torch, timm or pymilvus.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, List, Optional

from embed.common import settings
from embed.common.descriptor import Descriptor, InvalidDescriptor, parse_descriptors
from embed.common.logs import quiet_grpc_environment, quiet_third_party_logs

log = logging.getLogger(__name__)


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


def descriptor_list(text: str) -> List[Descriptor]:
    """argparse type for ``--descriptors avg,gem3-l2`` (embed.common.descriptor)."""
    try:
        return parse_descriptors(text)
    except InvalidDescriptor as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def one_descriptor(text: str) -> Descriptor:
    """argparse type for ``--descriptor gem3-white512``."""
    try:
        return Descriptor.parse(text)
    except InvalidDescriptor as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int_list(text: str) -> List[int]:
    """argparse type for comma-separated cut-offs such as ``1,5,10``."""
    parts = [t.strip() for t in text.split(",") if t.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("expected comma-separated positive integers, e.g. 1,5,10")
    try:
        return [positive_int(t) for t in parts]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers (e.g. 1,5,10), got {text!r}"
        ) from None


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--split", required=True, help="split folder under the data root, e.g. val")
    g.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="folder holding the split folders; always wins over --dataset, nothing is downloaded "
        f"(env RETRIEVAL_DATA_ROOT; default {settings.current().data_root})",
    )
    g.add_argument(
        "--dataset",
        default=None,
        metavar="NAME",
        help=f"tiny-imagenet or imagenette: found in data/datasets or ../shared/datasets (env "
        f"{settings.DATASETS_ENV}), else downloaded there once (checksum verified)",
    )
    g.add_argument(
        "--limit", type=positive_int, default=None, help="only the first N images in canonical (sorted path) order"
    )


def add_weights_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("weights")
    g.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="local weights file (.pth/.pt/.bin or .safetensors; raw or under model/state_dict/model_ema)",
    )
    g.add_argument(
        "--random-init",
        action="store_true",
        help="run with random weights when none are available (every output says so)",
    )


def add_compute_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("compute")
    g.add_argument(
        "--out",
        type=Path,
        default=Path(settings.current().embeddings),
        help="embeddings folder (env RETRIEVAL_EMBEDDINGS; default %(default)s)",
    )
    g.add_argument("--batch-size", type=positive_int, default=None, help="default: 256 on GPU, 32 on CPU")
    g.add_argument(
        "--workers", type=non_negative_int, default=None, help="image decoding processes (default: by device and cores)"
    )
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    g.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="autocast precision; auto = the fastest measured: bf16 on GPUs and on CPUs with native bf16 "
        "(AVX512-BF16/AMX), else fp32",
    )
    g.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels_last memory format (default: on for convnets)",
    )
    g.add_argument("--compile", action="store_true", help="torch.compile the model (slow start, faster long runs)")
    g.add_argument(
        "--decode",
        default="auto",
        choices=["auto", "workers", "device"],
        help="workers: PIL decodes and resizes in DataLoader processes; device: resize/crop/normalise "
        "run batched on the model's device, JPEGs decoded there too on a GPU (nvJPEG). "
        "auto (default): the fastest measured; device on a CPU for small images that are "
        "enlarged (e.g. Tiny-ImageNet), workers otherwise",
    )
    g.add_argument("--shard-size", type=positive_int, default=1024, help="images per shard file (resume granularity)")
    g.add_argument("--force", action="store_true", help="recompute embeddings even if they are on disk")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def resolve_data_root(args: argparse.Namespace) -> Path:
    """--data-root if given (nothing downloaded), else the named --dataset (downloaded once), else the default."""
    if args.data_root is None:
        if args.dataset:
            from embed.sources.dataset_download import ensure_dataset

            args.data_root = ensure_dataset(args.dataset, progress=not getattr(args, "no_progress", False))
            args.dataset = None  # resolved: later calls see a plain data root
        else:
            args.data_root = Path(settings.current().data_root)
    elif args.dataset:
        log.info("--data-root %s given: --dataset %s is not looked up or downloaded", args.data_root, args.dataset)
    return args.data_root


def check_inputs(args: argparse.Namespace, all_allowed: bool = False) -> None:
    """Fail at once on a wrong model name, checkpoint path, data root or split: before a model (torch) loads.

    A named ``--dataset`` not downloaded yet is checked after its download, by the command itself.
    """
    from embed.models.catalog import check_model_name
    from embed.models.weights import WeightsUnavailable
    from embed.sources.datasets import split_folder

    if not (all_allowed and args.model == "all"):
        check_model_name(args.model)
    checkpoint = getattr(args, "checkpoint", None)
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise WeightsUnavailable(f"checkpoint {checkpoint} does not exist")
    if args.data_root is not None or not args.dataset:
        split_folder(args.data_root or settings.current().data_root, args.split)


def extract_config(args: argparse.Namespace, model: Optional[str] = None):
    from embed.extraction.extract import ExtractConfig

    return ExtractConfig(
        model=model or args.model,
        split=args.split,
        data_root=resolve_data_root(args),
        out=args.out,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        precision=args.precision,
        channels_last=args.channels_last,
        compile=args.compile,
        decode=args.decode,
        limit=args.limit,
        checkpoint=args.checkpoint,
        random_init=args.random_init,
        force=args.force,
        shard_size=args.shard_size,
        progress=not args.no_progress,
        descriptors=_extract_descriptors(args),
    )


def _extract_descriptors(args: argparse.Namespace) -> List[Descriptor]:
    """The poolings to extract: ``--descriptors`` (embed extract) or ``--descriptor``'s pooling (indexer build)."""
    if getattr(args, "descriptors", None):
        return [d.pooled for d in args.descriptors]
    one = getattr(args, "descriptor", None)
    return [one.pooled] if one is not None else [Descriptor()]


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    quiet_third_party_logs()


def run_cli(
    handlers,
    build_parser: Callable[[], argparse.ArgumentParser],
    argv: Optional[List[str]],
    extra_errors: tuple = (),
) -> int:
    """Parse, dispatch, and turn expected failures into one clear line and exit code 2."""
    try:
        parser = build_parser()  # its defaults come from the RETRIEVAL_* variables
    except settings.SettingsError as e:  # every RETRIEVAL_* variable is read there: a bad one fails here or nowhere
        print(f"error: {e}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)  # first: --help and usage errors need none of the imports below
    quiet_grpc_environment()
    setup_logging(getattr(args, "verbose", False))
    from embed.common.identity import InvalidName
    from embed.extraction.shards import StoreMismatch
    from embed.models.checkpoint_mapping import CheckpointMismatchError
    from embed.models.weights import WeightsUnavailable
    from embed.sources.datasets import DatasetError
    from embed.sources.download import DownloadError

    expected = (
        DatasetError,
        InvalidName,
        WeightsUnavailable,
        CheckpointMismatchError,
        DownloadError,
        StoreMismatch,
        FileNotFoundError,
        PermissionError,
        IsADirectoryError,
        NotADirectoryError,
    )
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
