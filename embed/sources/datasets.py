"""Data sources: turn ``--data-root DIR --split NAME`` into an ordered list of labelled images.

Three layouts are recognised automatically, in this order:

* Tiny-ImageNet val: ``DIR/NAME/images/`` + ``DIR/NAME/val_annotations.txt``
  (tab-separated ``file  wnid  x0 y0 x1 y1``).
* ImageNet flat val: ``DIR/NAME/ILSVRC2012_val_*.JPEG`` with ``LOC_val_solution.csv``
  (``ImageId,PredictionString`` where the string starts with the synset) next to the split folder
  or inside it.
* ImageFolder: one sub-folder per class under ``DIR/NAME`` (any names, ImageNet synsets or not).

``--images DIR`` (``load_folder``) takes any folder of images instead, flat or a tree, with the labels a
``LabelSource`` says: none (unlabelled), the sub-folder names, or a CSV/TSV file of relative path and label.

The canonical order is the sorted relative path; an image's position in that order is its id.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import logging
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from embed.sources.imaging import IMAGE_EXTENSIONS, has_image_extension

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


LABEL_KINDS = ("layout", "none", "folders", "file")
LOOSE_RULES = ("refuse", "folder-name")


@dataclass(frozen=True)
class LabelSource:
    """Where an image list's labels come from: the one definition every command, output and record uses.

    ``layout``: the benchmark layout's own annotations (``--data-root/--split``); ``none``: unlabelled;
    ``folders``: the first sub-folder under the image folder names the class (as ImageFolder), images directly
    in the folder are refused or, with ``loose="folder-name"``, take the folder's own name; ``file``: a CSV/TSV of
    relative path and label.
    """

    kind: str = "layout"
    file: Optional[Path] = None
    loose: str = "refuse"

    def __post_init__(self):
        if self.kind not in LABEL_KINDS:
            raise DatasetError(f"unknown label source {self.kind!r} (one of {', '.join(LABEL_KINDS)})")
        if (self.kind == "file") != (self.file is not None):
            raise DatasetError("a label file goes with --labels FILE, and only there")
        if self.loose not in LOOSE_RULES:
            raise DatasetError(f"--loose-images takes {' or '.join(LOOSE_RULES)}, got {self.loose!r}")

    @classmethod
    def parse(cls, text: str) -> "LabelSource":
        """``none``, ``folders``, ``folders+folder-name``, ``file:PATH`` or ``layout``: what ``text`` writes."""
        text = text or "layout"
        if text.startswith("file:"):
            return cls("file", Path(text[5:]))
        kind, _, loose = text.partition("+")
        return cls(kind, None, loose or "refuse")

    @property
    def text(self) -> str:
        """The stored form (manifest, collection metadata, reports): ``LabelSource.parse`` reads it back."""
        if self.kind == "file":
            return f"file:{self.file}"
        return f"{self.kind}+{self.loose}" if self.kind == "folders" and self.loose != "refuse" else self.kind

    def options(self) -> List[str]:
        """The command-line options that give this label source (with ``--images``), for the commands suggested."""
        if self.kind == "layout":
            return []
        value = str(self.file) if self.kind == "file" else self.kind
        loose = ["--loose-images", self.loose] if self.kind == "folders" and self.loose != "refuse" else []
        return ["--labels", value, *loose]

    def describe(self, layout: str = "") -> str:
        """How the images were labelled, in words, for every output."""
        if self.kind == "none":
            return "unlabelled (--labels none)"
        if self.kind == "folders":
            rule = (
                "; images beside the class folders take the folder's own name (--loose-images folder-name)"
                if self.loose == "folder-name"
                else ""
            )
            return f"labelled by sub-folder name (--labels folders{rule})"
        if self.kind == "file":
            return f"labelled by {self.file} (--labels FILE)"
        return f"labelled by the {layout or 'data set'} layout's annotations"


def labelled(class_ids: Sequence[str]) -> bool:
    """Whether labels can be evaluated: every image has one and there are at least two classes. One class (or none)
    makes every neighbour a hit: such a set is evaluated as unlabelled everywhere."""
    return len(set(class_ids)) >= 2 and all(class_ids)


@dataclass
class ImageList:
    data_root: Path
    split: str
    layout: str
    records: List[ImageRecord] = field(default_factory=list)
    labels: LabelSource = field(default_factory=LabelSource)
    # files in the folder that are not listed, each with its reason (hidden, not an image, a folder link, ...)
    left_out: List[Tuple[str, str]] = field(default_factory=list)

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
        return replace(self, records=self.records[:limit])

    def class_ids(self) -> List[str]:
        return sorted({r.class_id for r in self.records})

    @property
    def is_labelled(self) -> bool:
        return labelled([r.class_id for r in self.records])

    def labels_line(self) -> str:
        """'unlabelled (--labels none): 20 images' or '... labelled by sub-folder name ...: 3 classes, 12 images'."""
        n = f"{len(self.records):,} images"
        if self.labels.kind != "none" and not self.is_labelled:
            classes = len(set(r.class_id for r in self.records if r.class_id))
            return f"{self.labels.describe(self.layout)}, but {classes} class(es): evaluated as unlabelled; {n}"
        if self.labels.kind == "none":
            return f"{self.labels.describe()}: {n}"
        return f"{self.labels.describe(self.layout)}: {len(self.class_ids())} classes, {n}"


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
    loose = sorted(p.name for p in split_dir.iterdir() if p.is_file() and has_image_extension(p.name))
    if loose:
        raise DatasetError(
            f"{len(loose)} image(s) lie beside the class folders of {split_dir} ({', '.join(loose[:3])}"
            f"{', ...' if len(loose) > 3 else ''}): they have no class. Move them into a class folder, or read the "
            f"folder with --images {split_dir} --labels folders --loose-images folder-name (they take the "
            f"folder's own name as class) or --labels none (unlabelled)"
        )
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


# any folder of images: --images DIR ----------------------------------------------------------------------------

LABEL_FILE_HEADERS = ("path", "file", "filename", "relpath", "image", "name")
SHOWN_PROBLEMS = 20


def image_folder(folder) -> Path:
    """``folder`` resolved, or a DatasetError naming the path: the check made before any model loads."""
    given = Path(folder).expanduser()
    resolved = given.resolve()
    if not resolved.exists():
        raise DatasetError(f"image folder {given} does not exist")
    if not resolved.is_dir():
        raise DatasetError(f"{given} is not a folder (--images takes a folder of images, flat or a tree)")
    if resolved.parent == resolved:
        raise DatasetError(f"--images {given}: the file system root cannot be an image folder")
    return resolved


def list_folder(folder: Path) -> Tuple[List[str], List[Tuple[str, str]]]:
    """(image relpaths, left out as (relpath, reason)) of a folder tree, both sorted.

    Hidden files and folders are left out, links to folders are not followed (they can loop or leave the tree),
    links to files are read as the file; every file not taken is returned with its reason."""
    images: List[str] = []
    left_out: List[Tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        prefix = (
            "" if os.path.samefile(dirpath, folder) else os.path.relpath(dirpath, folder).replace(os.sep, "/") + "/"
        )

        def rel(name: str, prefix: str = prefix) -> str:
            return prefix + name

        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                left_out.append((rel(d) + "/", "hidden folder"))
            elif os.path.islink(os.path.join(dirpath, d)):
                left_out.append((rel(d) + "/", "link to a folder: not followed"))
            else:
                keep.append(d)
        dirnames[:] = keep
        for name in filenames:
            path = os.path.join(dirpath, name)
            if name.startswith("."):
                left_out.append((rel(name), "hidden file"))
            elif not has_image_extension(name):
                left_out.append((rel(name), f"not an image file name (extensions: {', '.join(IMAGE_EXTENSIONS)})"))
            elif os.path.islink(path) and not os.path.isfile(path):
                left_out.append((rel(name), "broken link"))
            else:
                images.append(rel(name))
    return sorted(images), sorted(left_out)


def load_folder(folder, labels: LabelSource = LabelSource("none"), limit: Optional[int] = None) -> ImageList:
    """Every image under ``folder`` (flat or a tree) in canonical order, labelled as ``labels`` says.

    The folder is ``data_root/split`` of the result (so that every command reads images from where it reads the
    benchmark layouts' images). Nothing is dropped silently: left-out files come back with reasons, and label
    problems fail with line numbers."""
    if labels.kind == "layout":
        raise DatasetError("--images takes --labels none, folders or FILE")
    folder = image_folder(folder)
    relpaths, left_out = list_folder(folder)
    if not relpaths:
        why = f"; left out: {_left_out_summary(left_out)}" if left_out else ""
        raise DatasetError(
            f"no images found in {folder} (searched the whole tree; extensions: "
            f"{', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)}){why}"
        )
    if labels.kind == "none":
        pairs = [(r, "") for r in relpaths]
    elif labels.kind == "folders":
        pairs = _folder_labels(folder, relpaths, labels.loose)
    else:
        assert labels.file is not None  # LabelSource checks it
        table = read_label_file(labels.file, folder, relpaths, dict(left_out))
        pairs = [(r, table[r]) for r in relpaths]
    records = [ImageRecord(i, rel, cls) for i, (rel, cls) in enumerate(pairs)]
    if left_out:
        log.info("%d file(s) in %s left out: %s", len(left_out), folder, _left_out_summary(left_out))
    return ImageList(folder.parent, folder.name, "folder", records, labels, left_out).limited(limit)


def _left_out_summary(left_out: Sequence[Tuple[str, str]]) -> str:
    by_reason: Dict[str, List[str]] = {}
    for rel, reason in left_out:
        by_reason.setdefault(reason, []).append(rel)
    return "; ".join(
        f"{len(names)} {reason} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
        for reason, names in sorted(by_reason.items())
    )


def _folder_labels(folder: Path, relpaths: Sequence[str], loose: str) -> List[Tuple[str, str]]:
    loose_images = [r for r in relpaths if "/" not in r]
    if len(loose_images) == len(relpaths):
        raise DatasetError(
            f"--labels folders: {folder} has no sub-folders with images (all {len(relpaths)} lie in the folder "
            f"itself); use --labels none (unlabelled) or --labels FILE"
        )
    if loose_images and loose != "folder-name":
        raise DatasetError(
            f"--labels folders: {len(loose_images)} image(s) lie beside the class folders of {folder} "
            f"({', '.join(loose_images[:3])}{', ...' if len(loose_images) > 3 else ''}) and have no class. Move "
            f"them into a class folder, add --loose-images folder-name (they take the class {folder.name!r}), or "
            f"use --labels FILE"
        )
    return [(r, r.split("/", 1)[0] if "/" in r else folder.name) for r in relpaths]


def _clean_label_path(text: str) -> str:
    path = text.strip().replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return path


def read_label_file(
    path: Path, folder: Path, relpaths: Sequence[str], left_out: Optional[Dict[str, str]] = None
) -> Dict[str, str]:
    """{relpath: label} for every image of ``relpaths`` from a CSV or TSV of ``relative path, label`` rows
    (a header row is allowed). Every problem is reported with its line number, all at once, and nothing is
    dropped: an unknown or left-out path, a duplicate row, an empty label, an image with no row."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"label file {path} does not exist")
    present = set(relpaths)
    left_out = left_out or {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        text = fh.read()
    delimiter = "\t" if path.suffix.lower() == ".tsv" or "\t" in text.split("\n", 1)[0] else ","
    table: Dict[str, str] = {}
    first_line: Dict[str, int] = {}
    problems: List[str] = []
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    for row in reader:
        line = reader.line_num
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) < 2:
            problems.append(f"line {line}: expected 'path{delimiter}label', got {delimiter.join(row)[:80]!r}")
            continue
        rel, label = _clean_label_path(row[0]), row[1].strip()
        if line == 1 and rel.lower() in LABEL_FILE_HEADERS and rel not in present:
            continue  # the header
        if not label:
            problems.append(f"line {line}: {rel}: empty label")
        elif rel in first_line:
            problems.append(f"line {line}: {rel} is listed again (first on line {first_line[rel]})")
        elif rel in present:
            table[rel] = label
            first_line[rel] = line
        elif rel in left_out:
            problems.append(f"line {line}: {rel} is in the folder but left out ({left_out[rel]})")
        elif rel.startswith("/") or ".." in rel.split("/"):
            problems.append(f"line {line}: {rel} is not a path relative to {folder}")
        elif (folder / rel).exists():
            problems.append(f"line {line}: {rel} is not an image this tool reads")
        else:
            problems.append(f"line {line}: {rel}: no such file in {folder}")
    unlabelled = [r for r in relpaths if r not in table and r not in first_line]
    if unlabelled:
        problems.append(
            f"{len(unlabelled)} image(s) of the folder have no row: {', '.join(unlabelled[:5])}"
            f"{', ...' if len(unlabelled) > 5 else ''}"
        )
    if problems:
        shown = problems[:SHOWN_PROBLEMS]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise DatasetError(
            f"label file {path}: {len(problems)} problem(s); fix them (nothing is dropped silently):\n  "
            + "\n  ".join(shown)
            + more
        )
    return table


def load_images(data_root, split: str, labels: LabelSource = LabelSource(), limit: Optional[int] = None) -> ImageList:
    """The image list of ``data_root/split``: a benchmark layout's labels, or any folder with ``labels``."""
    if labels.kind == "layout":
        return load_split(data_root, split, limit)
    return load_folder(Path(data_root) / split, labels, limit)


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
