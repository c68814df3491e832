"""One identity for a set of vectors: which model embedded which split of which dataset.

The embeddings folder, the Milvus collection name and every lookup (CLI, app, evaluation) derive
from this key, so they cannot disagree. NumPy- and torch-free: the app and ``--help`` import it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

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
    model: str      # registry name, e.g. "effnet-lite0" or "timm:resnet50d"
    dataset: str    # the data root's folder name, e.g. "tiny-imagenet-200"
    split: str

    def folder(self, embeddings_root: Path) -> Path:
        """``<root>/<model key>/<dataset>/<split>``: where the manifest and shards live."""
        return Path(embeddings_root) / safe_model_key(self.model) / self.dataset / self.split

    @property
    def collection_name(self) -> str:
        """``effnet-lite0``, ``tiny-imagenet-200``, ``val`` -> ``effnet_lite0__tiny_imagenet_200__val``."""
        name = "__".join(_name_part(p) for p in (self.model, self.dataset, self.split))
        return validate_collection_name("c_" + name if name[0].isdigit() else name)

    def matches(self, model: Optional[str] = None, split: Optional[str] = None, dataset: Optional[str] = None) -> bool:
        """Whether this key fits a lookup; a part given as None matches anything."""
        return all(want is None or want == have
                   for want, have in ((model, self.model), (split, self.split), (dataset, self.dataset)))

    def __str__(self) -> str:
        return f"{self.model}/{self.dataset}/{self.split}"
