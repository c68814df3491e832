"""Data sources: turn ``--data-root DIR --split NAME`` into an ordered list of labelled images.

Three layouts are recognised automatically, in this order:

* Tiny-ImageNet val: ``DIR/NAME/images/`` + ``DIR/NAME/val_annotations.txt``
  (tab-separated ``file  wnid  x0 y0 x1 y1``).
* ImageNet flat val: ``DIR/NAME/ILSVRC2012_val_*.JPEG`` with ``LOC_val_solution.csv``
  (``ImageId,PredictionString`` where the string starts with the synset) next to the split folder
  or inside it.
* ImageFolder: one sub-folder per class under ``DIR/NAME`` (any names, ImageNet synsets or not).

The canonical order is the sorted relative path; an image's position in that order is its id.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from embed.sources.imaging import has_image_extension

log = logging.getLogger(__name__)

SYNSET_RE = re.compile(r"^n\d{8}$")
TINY_ANNOTATIONS = "val_annotations.txt"
IMAGENET_SOLUTION = "LOC_val_solution.csv"


class DatasetError(ValueError):
    """The data root or split cannot be used; the message says what to do."""


@dataclass(frozen=True)
class ImageRecord:
    position: int  # index in canonical order: the image id
    relpath: str  # relative to the split folder, '/' separated
    class_id: str


@dataclass
class ImageList:
    data_root: Path
    split: str
    layout: str
    records: List[ImageRecord] = field(default_factory=list)

    @property
    def split_dir(self) -> Path:
        return self.data_root / self.split

    @property
    def dataset_name(self) -> str:
        return self.data_root.name

    def __len__(self) -> int:
        return len(self.records)

    def path(self, record: ImageRecord) -> Path:
        return self.split_dir / record.relpath

    def fingerprint(self) -> str:
        """Hash of the (relpath, class) list: two runs agree on ids only if this agrees."""
        h = hashlib.sha256()
        for r in self.records:
            h.update(f"{r.relpath}\t{r.class_id}\n".encode())
        return h.hexdigest()[:16]

    def limited(self, limit: Optional[int]) -> "ImageList":
        if limit is None or limit >= len(self.records):
            return self
        if limit < 0:
            raise DatasetError("--limit must be >= 0")
        return ImageList(self.data_root, self.split, self.layout, self.records[:limit])

    def class_ids(self) -> List[str]:
        return sorted({r.class_id for r in self.records})


def available_splits(data_root: Path) -> List[str]:
    if not data_root.is_dir():
        return []
    return sorted(p.name for p in data_root.iterdir() if p.is_dir() and not p.name.startswith("."))


def split_folder(data_root, split: str) -> Path:
    """``data_root/split`` when both exist (a quick check: nothing is listed), else a DatasetError saying why."""
    data_root = Path(data_root).expanduser().resolve()
    if not data_root.is_dir():
        raise DatasetError(f"data root {data_root} does not exist or is not a folder (set --data-root)")
    if not split or "/" in split or "\\" in split or split in (".", ".."):
        raise DatasetError(f"invalid split name {split!r}")
    split_dir = data_root / split
    if not split_dir.is_dir():
        splits = available_splits(data_root)
        hint = f"; splits found: {', '.join(splits)}" if splits else "; it has no sub-folders"
        raise DatasetError(f"split {split!r} not found under {data_root}{hint}")
    return split_dir


def first_image(split_dir: Path) -> Optional[Path]:
    """Some image file under ``split_dir``, or None: a quick check (it stops at the first) that a build can run
    before its model loads; the full listing, which can take a while on ImageNet, comes later."""
    for dirpath, dirnames, filenames in os.walk(split_dir, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if has_image_extension(name) and not name.startswith("."):
                return Path(dirpath) / name
    return None


def no_images_error(split_dir: Path, layout: str = "") -> DatasetError:
    return DatasetError(
        f"no images found in {split_dir} ({f'layout {layout}; ' if layout else ''}extensions: jpg, jpeg, png, webp, "
        f"bmp, gif)"
    )


def load_split(data_root, split: str, limit: Optional[int] = None) -> ImageList:
    """Resolve ``data_root/split`` in whichever layout it is and list its images in canonical order."""
    split_dir = split_folder(data_root, split)
    data_root = split_dir.parent

    if (split_dir / "images").is_dir() and (split_dir / TINY_ANNOTATIONS).is_file():
        layout = "tiny-imagenet"
        pairs, skipped = _tiny_imagenet(split_dir)
    elif (solution := _find_imagenet_solution(data_root, split_dir)) is not None:
        layout = "imagenet-val"
        pairs, skipped = _imagenet_flat(split_dir, solution)
    else:
        layout = "imagefolder"
        pairs, skipped = _image_folder(split_dir)
    pairs.sort()
    records = [ImageRecord(i, rel, cls) for i, (rel, cls) in enumerate(pairs)]
    if not records:
        raise no_images_error(split_dir, layout)
    if skipped:
        log.warning("%d annotation entries skipped in %s (first: %s: %s)", len(skipped), split_dir, *skipped[0])
    return ImageList(data_root, split, layout, records).limited(limit)


def parse_tiny_annotation_line(line: str) -> Optional[Tuple[str, str]]:
    """``val_0.JPEG\\tn03444034\\t0\\t32\\t44\\t62`` -> ('val_0.JPEG', 'n03444034'); None for blank lines.

    Raises ValueError for a malformed line.
    """
    line = line.strip()
    if not line:
        return None
    parts = line.split("\t") if "\t" in line else line.split()
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(f"expected 'file<TAB>class ...', got {line[:80]!r}")
    name, cls = parts[0].strip(), parts[1].strip()
    _check_plain_name(name)
    return name, cls


def parse_imagenet_solution_row(row: List[str]) -> Optional[Tuple[str, str]]:
    """``['ILSVRC2012_val_00000001', 'n01751748 16 23 ...']`` -> (image id, synset); None for the header."""
    if not row or not any(cell.strip() for cell in row):
        return None
    if len(row) < 2:
        raise ValueError(f"expected 'ImageId,PredictionString', got {row!r}")
    image_id, prediction = row[0].strip(), row[1].strip()
    if image_id == "ImageId":
        return None
    tokens = prediction.split()
    if not image_id or not tokens:
        raise ValueError(f"empty image id or prediction string in {row!r}")
    _check_plain_name(image_id)
    return image_id, tokens[0]


def _check_plain_name(name: str) -> None:
    # annotation files are data, not trusted paths: no escaping the split folder
    if "/" in name or "\\" in name or name in (".", "..") or "\x00" in name:
        raise ValueError(f"file name {name!r} is not a plain file name")


def _tiny_imagenet(split_dir: Path):
    present = {p.name: p for p in (split_dir / "images").iterdir() if p.is_file() and has_image_extension(p.name)}
    pairs, skipped = [], []
    with open(split_dir / TINY_ANNOTATIONS, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            try:
                parsed = parse_tiny_annotation_line(line)
            except ValueError as e:
                skipped.append((f"{TINY_ANNOTATIONS}:{lineno}", str(e)))
                continue
            if parsed is None:
                continue
            name, cls = parsed
            if name not in present:
                skipped.append((name, "listed in annotations but missing from images/"))
                continue
            pairs.append((f"images/{name}", cls))
    return pairs, skipped


def _find_imagenet_solution(data_root: Path, split_dir: Path) -> Optional[Path]:
    for candidate in (split_dir / IMAGENET_SOLUTION, data_root / IMAGENET_SOLUTION):
        if candidate.is_file():
            return candidate
    return None


def _imagenet_flat(split_dir: Path, solution: Path):
    labels: Dict[str, str] = {}
    skipped = []
    with open(solution, newline="", encoding="utf-8", errors="replace") as fh:
        for lineno, row in enumerate(csv.reader(fh), 1):
            try:
                parsed = parse_imagenet_solution_row(row)
            except ValueError as e:
                skipped.append((f"{solution.name}:{lineno}", str(e)))
                continue
            if parsed:
                labels[parsed[0]] = parsed[1]
    pairs = []
    for p in split_dir.iterdir():
        if not (p.is_file() and has_image_extension(p.name)):
            continue
        cls = labels.get(p.name.rsplit(".", 1)[0])
        if cls is None:
            skipped.append((p.name, f"no label in {solution.name}"))
            continue
        pairs.append((p.name, cls))
    return pairs, skipped


def _image_folder(split_dir: Path):
    pairs = []
    for class_dir in split_dir.iterdir():
        if not class_dir.is_dir() or class_dir.name.startswith("."):
            continue
        for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=False):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if has_image_extension(name) and not name.startswith("."):
                    rel = os.path.relpath(os.path.join(dirpath, name), split_dir).replace(os.sep, "/")
                    pairs.append((rel, class_dir.name))
    return pairs, []


@functools.lru_cache(maxsize=1)
def _imagenet_descriptions() -> Dict[str, str]:
    """Synset -> lemmas, from the table timm ships, read without importing timm (it would import torch: the app
    names classes long before, or without ever, loading a model)."""
    import importlib.util

    spec = importlib.util.find_spec("timm")
    table = (
        Path(spec.submodule_search_locations[0]) / "data" / "_info" / "imagenet_synset_to_lemma.txt"
        if spec and spec.submodule_search_locations
        else None
    )
    if table is not None and table.is_file():
        with open(table, newline="", encoding="utf-8") as fh:
            return dict(csv.reader(fh, delimiter="\t"))
    from timm.data import ImageNetInfo

    descriptions = ImageNetInfo().label_descriptions(as_dict=True)
    assert isinstance(descriptions, dict)
    return descriptions


def class_name(class_id: str) -> str:
    """Human-readable name: ImageNet synsets through timm's ImageNet info, anything else as is."""
    if SYNSET_RE.match(class_id):
        desc = _imagenet_descriptions().get(class_id)
        if desc:
            return desc.split(",")[0].strip()
    return class_id
