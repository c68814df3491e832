"""The command-line toolkit both CLIs share: argument types, argument groups, logging set-up, dispatch.

Imports nothing heavy at module level: `--help` and usage errors are answered without torch, timm or pymilvus.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, List, NoReturn, Optional

from embed.common import settings
from embed.common.descriptor import Descriptor, InvalidDescriptor, parse_descriptors
from embed.common.logs import quiet_grpc_environment, quiet_third_party_logs
from embed.common.settings import RetrievalSettings

log = logging.getLogger(__name__)


class CommandParser(argparse.ArgumentParser):
    """argparse, whose usage errors are one line naming the --help to read (not the whole usage block first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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


IMAGES_HELP = (
    "any folder of images, flat or a tree, instead of --data-root/--split: listed (and its labels read) before "
    "a model loads; its collections are named after it and the folder holding it (~/Pictures/shop: "
    "effnet_lite0__pictures__shop)"
)
LABELS_HELP = (
    "how the images are labelled: none (unlabelled: the default with --images; evaluated with label-free "
    "measures), folders (the first sub-folder names the class, as ImageFolder), or FILE (a CSV/TSV of relative "
    "path and label; unknown paths, duplicate rows and images without a row fail with line numbers). Fewer "
    "than two classes is evaluated as unlabelled. Default without --images: the layout's own annotations"
)
LOOSE_HELP = (
    "with --labels folders, images lying beside the class folders: refuse (default: an error naming them) or "
    "folder-name (they take the image folder's own name as class; every output says so)"
)


def label_option(text: str) -> str:
    """argparse type of --labels: none, folders or an existing file (checked before anything loads)."""
    if text in ("none", "folders"):
        return text
    if not Path(text).expanduser().is_file():
        raise argparse.ArgumentTypeError(f"expected none, folders or a CSV/TSV label file; {text!r} is no file")
    return text


def add_image_folder_arguments(g, labels: bool = True) -> None:
    """--images DIR, and where images are embedded --labels / --loose-images: one definition for every command
    (``image_folder_from_args`` reads them)."""
    g.add_argument("--images", type=Path, default=None, metavar="DIR", help=IMAGES_HELP)
    if labels:
        g.add_argument("--labels", type=label_option, default=None, metavar="none|folders|FILE", help=LABELS_HELP)
        g.add_argument("--loose-images", choices=["refuse", "folder-name"], default="refuse", help=LOOSE_HELP)


def image_folder_from_args(args: argparse.Namespace, split_required: bool = True) -> None:
    """--images DIR -> ``args.data_root`` (the folder holding it) and ``args.split`` (its name), as every command reads
    images and finds collections; ``args.label_source``: the LabelSource the options give. Fails at once, naming
    the path, on a missing folder or on --images given with --data-root/--split."""
    from embed.sources.datasets import DatasetError, LabelSource, image_folder

    if getattr(args, "label_source", None) is not None:
        return  # read once: run_cli reads them for every command that has them, check_inputs again
    images = getattr(args, "images", None)
    labels = getattr(args, "labels", None)
    loose = getattr(args, "loose_images", "refuse")
    if images is not None:
        if getattr(args, "split", None) or getattr(args, "data_root", None):
            raise DatasetError(
                "--images DIR names the folder itself: give it instead of --data-root/--split, not with them"
            )
        folder = image_folder(images)
        args.data_root, args.split = folder.parent, folder.name
        labels = labels or "none"
    elif split_required and not getattr(args, "split", None):
        raise DatasetError("which images? give --images DIR (any folder) or --split NAME (with --data-root DIR)")
    if labels is None:
        args.label_source = LabelSource()
    elif labels in ("none", "folders"):
        args.label_source = LabelSource(labels, None, loose)
    else:
        args.label_source = LabelSource("file", Path(labels).expanduser().resolve(), loose)


def model_names(text: str) -> List[str]:
    """``"gresnet, convnext,vit"`` -> the names, spaces and empty parts ignored (an empty list for "")."""
    return [t.strip() for t in text.split(",") if t.strip()]


def model_list(text: str) -> List[str]:
    """argparse type for comma-separated model names such as ``gresnet,convnext,vit``: at least one."""
    names = model_names(text)
    if not names:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated model names, e.g. gresnet,convnext,vit, got {text!r}"
        )
    return names


def add_data_arguments(p: argparse.ArgumentParser, config: RetrievalSettings) -> None:
    g = p.add_argument_group("data (--images DIR, or --data-root DIR --split NAME)")
    add_image_folder_arguments(g)
    g.add_argument("--split", default=None, help="split folder under the data root, e.g. val")
    g.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="folder holding the split folders; always wins over --dataset, nothing is downloaded "
        f"(env RETRIEVAL_DATA_ROOT; default {config.data_root})",
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


def add_compute_arguments(p: argparse.ArgumentParser, config: RetrievalSettings) -> None:
    g = p.add_argument_group("compute")
    g.add_argument(
        "--out",
        type=Path,
        default=Path(config.embeddings),
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
    g.add_argument(
        "--shard-size",
        type=positive_int,
        default=1024,
        help="images per shard file (default %(default)s; an interrupted run keeps every finished batch)",
    )
    g.add_argument("--force", action="store_true", help="recompute embeddings even if they are on disk")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def resolve_data_root(args: argparse.Namespace) -> Path:
    """--data-root if given (nothing downloaded), else the named --dataset (downloaded once), else the default."""
    if args.data_root is None:
        if args.dataset:
            from embed.sources.dataset_download import ensure_dataset

            progress = not getattr(args, "no_progress", False)
            args.data_root = ensure_dataset(args.dataset, progress, args.settings)
            args.dataset = None  # resolved: later calls see a plain data root
        else:
            args.data_root = Path(args.settings.data_root)
    elif args.dataset:
        log.info("--data-root %s given: --dataset %s is not looked up or downloaded", args.data_root, args.dataset)
    return args.data_root


def check_inputs(args: argparse.Namespace, all_allowed: bool = False) -> None:
    """Fail at once on a wrong model name, checkpoint path, data root or split: before a model (torch) loads.

    A named ``--dataset`` not downloaded yet is checked after its download, by the command itself.
    """
    from embed.models.catalog import check_model_name
    from embed.models.weights import WeightsUnavailable

    if not (all_allowed and args.model == "all"):
        check_model_name(args.model)
    checkpoint = getattr(args, "checkpoint", None)
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise WeightsUnavailable(f"checkpoint {checkpoint} does not exist")
    image_folder_from_args(args)
    if args.data_root is not None or not args.dataset:
        data_root = args.data_root or args.settings.data_root
        if args.label_source.kind != "layout":
            from embed.sources.datasets import load_folder, split_folder

            images = load_folder(split_folder(data_root, args.split), args.label_source)  # listed, labels read
            log.info("%s/%s: %s", data_root, args.split, images.labels_line())
        else:
            check_split_has_images(data_root, args.split)


def check_split_has_images(data_root, split: str) -> None:
    """The split's folder exists and holds at least one image (a moment, before any model loads)."""
    from embed.sources.datasets import first_image, no_images_error, split_folder

    folder = split_folder(data_root, split)
    if first_image(folder) is None:
        raise no_images_error(folder)


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
        labels=args.label_source,
        descriptors=_extract_descriptors(args),
        settings=args.settings,
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
    build_parser: Callable[[RetrievalSettings], argparse.ArgumentParser],
    argv: Optional[List[str]],
    extra_errors: tuple = (),
) -> int:
    """Read the settings, parse, dispatch, and turn expected failures into one clear line and exit code 2.

    The RETRIEVAL_* variables are read here, once per command: the parser's defaults come from them and every
    handler finds them as ``args.settings``, to pass down."""
    try:
        config = settings.current()
    except settings.SettingsError as e:  # every RETRIEVAL_* variable is read there: a bad one fails here or nowhere
        print(f"error: {e}", file=sys.stderr)
        return 2
    args = build_parser(config).parse_args(argv)  # first: --help and usage errors need none of the imports below
    args.settings = config
    quiet_grpc_environment()
    setup_logging(getattr(args, "verbose", False))
    from embed.extraction import host_memory

    host_memory.apply_settings(config)
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
        if hasattr(args, "images"):
            image_folder_from_args(args, getattr(args, "split_required", True))
        return handlers[args.command](args)
    except expected + tuple(extra_errors) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        # disk full, read-only folder: an expected condition with a plain message
        print(f"error: {e.strerror or e}: {getattr(e, 'filename', '') or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: what was finished is kept (embeddings: every finished batch); rerun the same command to "
            "resume",
            file=sys.stderr,
        )
        return 130
