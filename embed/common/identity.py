"""What a set of vectors is: its key (which model embedded which split of which dataset: the embeddings
folder, the Milvus collection name and every lookup derive from it) and its full identity (how it was
made: weights, transform, decode, precision, data), stored and compared the same way everywhere. NumPy- and torch-free: the app and ``--help`` import it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Type, TypeVar

# a model name as a file-name part: 'timm:resnet18.a1_in1k' -> 'timm_resnet18_a1_in1k'
MODEL_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
# only [A-Za-z0-9_] names reach Milvus: nothing user-supplied is ever spliced into an expression
COLLECTION_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


class InvalidName(ValueError):
    pass


def safe_model_key(name: str) -> str:
    """A model name usable in file names: 'timm:resnet18.a1_in1k' -> 'timm_resnet18_a1_in1k'."""
    key = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if not key or not MODEL_KEY_RE.match(key.lower()):
        raise InvalidName(f"model name {name!r} cannot be used as a key")
    return key


def validate_collection_name(name: str) -> str:
    if not isinstance(name, str) or not COLLECTION_NAME_RE.match(name):
        raise InvalidName(f"invalid collection name {name!r}")
    return name


def _name_part(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", part).strip("_").lower() or "x"


@dataclass(frozen=True)
class EmbeddingKey:
    model: str  # registry name, e.g. "effnet-lite0" or "timm:resnet50d"
    dataset: str  # the data root's folder name, e.g. "tiny-imagenet-200"
    split: str
    descriptor: str = ""  # Descriptor.key_part: "" for the model's own pooling, else e.g. "gem3", "gem3-white512"

    @property
    def pooling_part(self) -> str:
        """The descriptor's pooling: whitening is applied to the shards of its pooling, never stored in them."""
        return self.descriptor.split("-")[0]

    def folder(self, embeddings_root: Path) -> Path:
        """``<root>/<model key>/<dataset>/<split>`` (``<split>__<pooling>`` for another pooling than the model's
        own): where the manifest and shards live."""
        split = f"{self.split}__{self.pooling_part}" if self.pooling_part else self.split
        return Path(embeddings_root) / safe_model_key(self.model) / self.dataset / split

    @property
    def collection_name(self) -> str:
        """``effnet-lite0``, ``tiny-imagenet-200``, ``val`` -> ``effnet_lite0__tiny_imagenet_200__val``; another
        descriptor than the model's own pooling adds itself: ``...__val__gem3_white512``."""
        parts = (self.model, self.dataset, self.split) + ((self.descriptor,) if self.descriptor else ())
        name = "__".join(_name_part(p) for p in parts)
        return validate_collection_name("c_" + name if name[0].isdigit() else name)

    def matches(
        self,
        model: Optional[str] = None,
        split: Optional[str] = None,
        dataset: Optional[str] = None,
        descriptor: Optional[str] = None,
    ) -> bool:
        """Whether this key fits a lookup; a part given as None matches anything."""
        return all(
            want is None or want == have
            for want, have in (
                (model, self.model),
                (split, self.split),
                (dataset, self.dataset),
                (descriptor, self.descriptor),
            )
        )

    def __str__(self) -> str:
        return f"{self.model}/{self.dataset}/{self.split}" + (f" [{self.descriptor}]" if self.descriptor else "")


@dataclass(frozen=True)
class VectorSetIdentity:
    """Everything that decides a set of vectors: two sets compare, or one replaces the other, only when equal.

    The shards' manifest and the collection's metadata both store this record and compare it with the
    same code (``compare``), so a collection cannot keep vectors the shards no longer hold, and a
    query is embedded exactly as the rows it is compared with (transform, decode, precision, weights).
    """

    model: str  # registry name, e.g. "effnet-lite0"
    timm_name: str
    dim: int
    weights_source: str  # "checkpoint" | "package" | "download" | "hub" | "random"
    weights_fingerprint: str  # "sha256:<hex>", "hub:<tag>" or "random:seed0"
    dataset: str  # the data root's folder name
    data_fingerprint: str  # hash of the split's (relpath, class) list: ids mean the same images
    split: str
    transform: str  # the eval transform, as timm builds it for the weights
    decode: str  # "workers" (PIL) or "device" (tensor resampling): they differ slightly
    precision: str  # "fp32" | "bf16" | "fp16": autocast dtype of the forward pass
    normalized: bool = False  # rows scaled to unit length (shards always hold raw vectors)
    # embed.common.descriptor.Descriptor.key_part: "" (records older than descriptors too) is the model's own
    # pooling, the classification pre-logits; else e.g. "gem3", or "gem3-white512" for a whitened collection
    descriptor: str = ""
    whitening: str = ""  # the learned whitening's fingerprint (WhiteningIdentity.fingerprint); "" when none

    @property
    def key(self) -> EmbeddingKey:
        return EmbeddingKey(self.model, self.dataset, self.split, self.descriptor)

    @property
    def is_random(self) -> bool:
        return self.weights_source == "random"

    def with_normalized(self, normalized: bool) -> "VectorSetIdentity":
        return replace(self, normalized=normalized)

    def compare(self, now: "VectorSetIdentity") -> "IdentityComparison":
        """Whether ``now`` is interchangeable with this (stored) set, and if not which fields differ: the one
        comparison every consumer makes (build, shards, query embedder, caches, report staleness, app)."""
        stored, other = self._decisive(), now._decisive()
        return IdentityComparison(
            tuple((name, stored[name], other[name]) for name in stored if stored[name] != other[name])
        )

    def digest(self, version: str) -> str:
        """A stable cache key: every field of this identity plus the consumer's own ``version`` (what else
        its cached values depend on), hashed; equal exactly when ``compare`` finds nothing and the versions match."""
        text = json.dumps({"identity": self._decisive(), "version": version}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _decisive(self) -> Dict[str, object]:
        """The fields ``compare`` and ``digest`` read: every one of them decides the vectors."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, object]) -> "VectorSetIdentity":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})  # type: ignore[arg-type]


@dataclass(frozen=True)
class IdentityComparison:
    """The fields in which a stored vector set and another one differ, as (field, stored, now)."""

    differences: Tuple[Tuple[str, object, object], ...]

    @property
    def interchangeable(self) -> bool:
        return not self.differences

    @property
    def fields(self) -> Tuple[str, ...]:
        return tuple(name for name, _, _ in self.differences)

    def words(self, stored: str = "stored", now: str = "now") -> str:
        """'decode: stored 'workers', now 'device'; precision: ...' (empty when interchangeable)."""
        return "; ".join(f"{name}: {stored} {_short(a)}, {now} {_short(b)}" for name, a, b in self.differences)


def _short(value: object, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


RecordT = TypeVar("RecordT")


def record_from_dict(cls: Type[RecordT], data: Dict[str, Any]) -> RecordT:
    """A dataclass holding an ``identity`` field (a manifest, a collection's metadata) from its stored form."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in data.items() if k in known}
    return cls(**{**values, "identity": VectorSetIdentity.from_dict(data["identity"])})


def regroup_flat_identity(data: Dict[str, Any], **unrecorded: Any) -> Dict[str, Any]:
    """A record stored before the identity was one field: its flat fields regrouped under ``identity``.
    ``unrecorded`` gives the identity fields such a record may lack, or its own value for them."""
    data = {**data.get("extra", {}), **data}
    flat = {"decode": "workers", "precision": "fp32", **data, **unrecorded}
    identity = {f.name: flat[f.name] for f in fields(VectorSetIdentity) if f.name in flat}
    return {**data, "identity": identity}
