"""PCA-whitening learned honestly: on images the evaluation does not use, stored with its own identity.

A whitening is learned from the raw pooled vectors of one vector set (a model, its weights, a pooling, a
data set's split): each row is scaled to unit length, centred on the learning images' mean, projected onto
the covariance's principal axes and divided by the square root of each axis' eigenvalue (NumPy ``eigh`` in
float64), optionally keeping only the first ``dim`` axes, then scaled to unit length again (Radenović et al.;
Jégou and Chum, "Negative evidences and co-occurrences in image retrieval", ECCV 2012).

Which images it may be learned on: another split of the data set, or, within the evaluated split, a
seeded set of classes disjoint from the evaluated classes (``ClassSplit``). Learning it on the evaluated
images is refused (``check_disjoint``): whitening fitted on the test images themselves flatters it (CroW:
43.1 -> 41.0 mAP on Oxford when it is not).

The artifact (``<embeddings>/<model>/<dataset>/whitening/<pooling>-<dim>-<fingerprint>.npz`` + ``.json``)
records the source vector set, the classes used, the number of images, the dimensions and a fingerprint of
the arrays; a collection built with it records that fingerprint in its identity, and queries in search and
the app load the same file and check it.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from embed.common.identity import VectorSetIdentity, safe_model_key
from embed.common.vectors import l2_normalize
from embed.extraction.shards import atomic_write_bytes
from indexer.milvus_store import StoreError

# the fields that make two vector sets the same vectors of possibly different images: a whitening learned on
# one applies to the other only when they agree on these
SAME_EMBEDDING = ("model", "timm_name", "dim", "weights_fingerprint", "transform", "decode", "precision", "descriptor")
METHOD = "PCA-whitening: unit length, centre, principal axes / sqrt(eigenvalue) (NumPy eigh, float64), unit length"


class WhiteningRefused(StoreError):
    """A whitening would be learned on, or applied to, images it must not see: the message says why."""


@dataclass(frozen=True)
class ClassSplit:
    """A seeded split of a data set's classes into evaluated classes and classes to learn a whitening on."""

    n_evaluated: int
    seed: int = 0

    def split(self, classes: Sequence[str]) -> Tuple[List[str], List[str]]:
        """(evaluated classes, learning classes), each sorted; disjoint, together every class."""
        unique = sorted(set(classes))
        if not 0 < self.n_evaluated < len(unique):
            raise WhiteningRefused(
                f"--eval-classes {self.n_evaluated}: needs between 1 and {len(unique) - 1} of the {len(unique)} "
                f"classes, so that some are left to learn the whitening on"
            )
        order = np.random.default_rng(self.seed).permutation(len(unique))
        evaluated = sorted(unique[i] for i in order[: self.n_evaluated])
        learning = sorted(unique[i] for i in order[self.n_evaluated :])
        return evaluated, learning

    def describe(self, n_classes: int, whitening: bool = True) -> str:
        """The draw in words; ``whitening``: and that the whitening is learned on the other classes."""
        drawn = f"{self.n_evaluated} of the {n_classes} classes evaluated, drawn with seed {self.seed}"
        return drawn + (f"; whitening learned on the other {n_classes - self.n_evaluated}" if whitening else "")


@dataclass(frozen=True)
class WhiteningIdentity:
    """What a learned whitening is: learned from which vectors of which images, into how many dimensions."""

    source: VectorSetIdentity  # the raw pooled vectors it was learned from
    classes: Tuple[str, ...]  # the classes of the learning images; () = every image of the source split
    n_images: int
    dim_in: int
    dim_out: int
    fingerprint: str  # sha256 of the mean and projection arrays
    method: str = METHOD

    def describe(self) -> str:
        src = self.source
        which = f"{len(self.classes)} classes of" if self.classes else "all of"
        return (
            f"whitening {self.dim_in}->{self.dim_out} learned on {self.n_images} images ({which} "
            f"{src.dataset}/{src.split}), {self.fingerprint[:19]}"
        )

    def to_dict(self) -> Dict:
        return {**asdict(self), "source": self.source.to_dict(), "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, data: Dict) -> "WhiteningIdentity":
        return cls(
            **{
                **data,
                "source": VectorSetIdentity.from_dict(data["source"]),
                "classes": tuple(data.get("classes", ())),
            }
        )


@dataclass
class Whitening:
    identity: WhiteningIdentity
    mean: np.ndarray  # (dim_in,) float64
    projection: np.ndarray  # (dim_in, dim_out) float64: eigenvectors / sqrt(eigenvalues)
    eigenvalues: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (dim_out,), descending
    path: Optional[Path] = None  # where it is stored, once saved or loaded

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Raw pooled vectors (n, dim_in) -> whitened unit-length vectors (n, dim_out), float32."""
        x = _unit64(vectors)
        if x.shape[1] != self.identity.dim_in:
            raise WhiteningRefused(f"vectors of dim {x.shape[1]}, the whitening takes {self.identity.dim_in}")
        return l2_normalize((x - self.mean) @ self.projection)

    def check_applies_to(self, identity: VectorSetIdentity) -> None:
        """Refuse vectors made otherwise than those the whitening was learned from (model, weights, pooling...)."""
        src = self.identity.source
        wrong = {
            n: (getattr(src, n), getattr(identity, n))
            for n in SAME_EMBEDDING
            if getattr(src, n) != getattr(identity, n)
        }
        if wrong:
            said = "; ".join(
                f"{k}: learned on {str(a)[:40]!r}, applied to {str(b)[:40]!r}" for k, (a, b) in wrong.items()
            )
            raise WhiteningRefused(f"this whitening was learned on other vectors ({said})")

    def save(self, folder: Path) -> Path:
        """``<folder>/<pooling>-<dim>-<fingerprint[:12]>.npz`` and its ``.json`` identity; returns the .npz."""
        ident = self.identity
        stem = f"{ident.source.descriptor or 'own'}-{ident.dim_out}-{ident.fingerprint.split(':')[-1][:12]}"
        buf = io.BytesIO()
        np.savez(buf, mean=self.mean, projection=self.projection, eigenvalues=self.eigenvalues)
        path = Path(folder) / f"{stem}.npz"
        atomic_write_bytes(path, buf.getvalue())
        atomic_write_bytes(path.with_suffix(".json"), json.dumps(ident.to_dict(), indent=1).encode())
        self.path = path
        return path

    @classmethod
    def load(cls, path: Path, fingerprint: Optional[str] = None) -> "Whitening":
        """The artifact at ``path``; with ``fingerprint``, refused unless its arrays still hash to it."""
        path = Path(path)
        identity = WhiteningIdentity.from_dict(json.loads(path.with_suffix(".json").read_text()))
        with np.load(path) as z:
            mean, projection, eigenvalues = z["mean"], z["projection"], z["eigenvalues"]
        actual = _fingerprint(mean, projection)
        if actual != identity.fingerprint or (fingerprint is not None and actual != fingerprint):
            raise WhiteningRefused(
                f"{path}: its arrays hash to {actual[:19]}, the record says {(fingerprint or identity.fingerprint)[:19]}"
            )
        return cls(identity, mean, projection, eigenvalues, path)


def _unit64(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in float64 (``l2_normalize`` rounds them to float32 first)."""
    x = np.asarray(vectors, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _fingerprint(mean: np.ndarray, projection: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in (mean, projection):
        h.update(np.ascontiguousarray(a, np.float64).tobytes())
    return "sha256:" + h.hexdigest()


def whitening_folder(embeddings_root: Path, identity: VectorSetIdentity) -> Path:
    return Path(embeddings_root) / safe_model_key(identity.model) / identity.dataset / "whitening"


def fit_pca_whitening(vectors: np.ndarray, dim: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, projection, eigenvalues) of unit-length ``vectors`` in float64: ``(x - mean) @ projection`` has
    identity covariance over the learning rows, in at most ``dim`` dimensions."""
    x = _unit64(vectors)
    n, d = x.shape
    mean = x.mean(0)
    centred = x - mean
    cov = centred.T @ centred / max(n - 1, 1)
    eigenvalues, eigenvectors = np.linalg.eigh(cov)  # ascending
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    rank = int(np.sum(eigenvalues > eigenvalues[0] * 1e-10))
    keep = min(dim or d, rank)
    if dim is not None and dim > rank:
        raise WhiteningRefused(
            f"whitening to {dim} dimensions needs a covariance of rank >= {dim}; {n} learning images of dim {d} give "
            f"rank {rank}: learn it on more images or ask for fewer dimensions"
        )
    eigenvalues, eigenvectors = eigenvalues[:keep], eigenvectors[:, :keep]
    # a fixed sign per axis (largest entry positive) makes the projection, and its fingerprint, reproducible
    signs = np.sign(eigenvectors[np.abs(eigenvectors).argmax(0), np.arange(keep)])
    eigenvectors = eigenvectors * signs
    return mean, eigenvectors / np.sqrt(eigenvalues), eigenvalues


def learn_whitening(
    vectors: np.ndarray,
    source: VectorSetIdentity,
    classes: Sequence[str] = (),
    dim: Optional[int] = None,
) -> Whitening:
    """A whitening of ``vectors`` (the raw pooled rows of ``source``, of ``classes`` or all of its images)."""
    mean, projection, eigenvalues = fit_pca_whitening(vectors, dim)
    identity = WhiteningIdentity(
        source=source.with_normalized(False),
        classes=tuple(sorted(classes)),
        n_images=int(len(vectors)),
        dim_in=int(vectors.shape[1]),
        dim_out=int(projection.shape[1]),
        fingerprint=_fingerprint(mean, projection),
    )
    return Whitening(identity, mean, projection, eigenvalues)


def check_disjoint(
    whitening: WhiteningIdentity, evaluated: VectorSetIdentity, evaluated_classes: Sequence[str]
) -> None:
    """Refuse a whitening learned on any image the evaluation uses.

    Another data set or another split is disjoint; the same split is disjoint only when the whitening was
    learned on a set of classes none of which is evaluated."""
    src = whitening.source
    if (src.dataset, src.split) != (evaluated.dataset, evaluated.split):
        return
    if src.data_fingerprint != evaluated.data_fingerprint:
        raise WhiteningRefused(
            f"the whitening was learned on another image list of {src.dataset}/{src.split} than the one evaluated: "
            f"which images it saw cannot be told; learn it again"
        )
    if not whitening.classes:
        raise WhiteningRefused(
            f"the whitening was learned on every image of {src.dataset}/{src.split}, the evaluated images "
            f"themselves: a whitening fitted on the test images flatters it. Learn it on another split, or on "
            f"classes disjoint from the evaluated ones (--eval-classes N --class-seed S)"
        )
    shared = sorted(set(whitening.classes) & set(evaluated_classes))
    if shared:
        raise WhiteningRefused(
            f"the whitening was learned on images of {len(shared)} evaluated classes ({', '.join(shared[:5])}"
            f"{', ...' if len(shared) > 5 else ''}) of {src.dataset}/{src.split}: a whitening fitted on the test "
            f"images flatters it. Learn it on classes disjoint from the evaluated ones, or on another split"
        )


def learn_from_rows(
    vectors: np.ndarray,
    class_ids: Sequence[str],
    source: VectorSetIdentity,
    class_split: Optional[ClassSplit],
    dim: Optional[int],
) -> Whitening:
    """A whitening of one vector set's rows: those of ``class_split``'s learning classes, or every row (for
    a whitening applied to another split)."""
    if class_split is None:
        return learn_whitening(vectors, source, (), dim)
    _, learning = class_split.split(class_ids)
    rows = np.isin(np.asarray(class_ids, dtype=object), learning)
    return learn_whitening(vectors[rows], source, learning, dim)


def learn_from_shards(
    embeddings_root: Path, folder: Path, class_split: Optional[ClassSplit], dim: Optional[int]
) -> Whitening:
    """Learn a whitening from the shards in ``folder`` and store it under ``embeddings_root``."""
    from embed.extraction.shards import EmbeddingStore

    store = EmbeddingStore(folder)
    manifest = store.read_manifest()
    if manifest is None:
        raise FileNotFoundError(f"no embeddings in {folder}: run `python -m embed extract` with this pooling first")
    positions, vectors, _ = store.load()
    class_ids = [manifest.class_ids[p] for p in positions]
    whitening = learn_from_rows(vectors, class_ids, manifest.identity, class_split, dim)
    whitening.save(whitening_folder(embeddings_root, manifest.identity))
    return whitening
