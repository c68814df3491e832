"""What a descriptor is: a pooling of the backbone's last feature map (or tokens) plus post-processing.

Poolings: ``avg``, ``max``, ``gem<p>`` (generalized mean, ``gem`` = ``gem3``) of a convnet's feature map or of a
ViT's patch tokens, and ``cls`` (a ViT's class token). Post-processing: none, unit length (``-l2``), or
PCA-whitening learned on other images (``-white`` or ``-white<dim>``: unit length, centre, project onto the
principal axes scaled by 1/sqrt(eigenvalue), unit length again, as Radenović et al. do).

Each model has a default pooling (``avg`` for convnets, ``cls`` for ViTs): the model's own pre-logits,
exactly the vectors the tool has always stored (ConvNeXt's head LayerNorm included). A descriptor whose
pooling is the default and that is not whitened is recorded as ``""`` in the identity, so older records,
folders and collection names stay as they were.

Names are short and stable (``avg``, ``gem3``, ``gem3-l2``, ``gem3-white512``): they appear in folder and
collection names, columns, report rows and map titles. Torch-free: the app and ``--help`` import it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import List, Optional, Sequence

DEFAULT = "default"  # the model's own pooling, raw
MAP_POOLINGS = ("avg", "max", "gem")
TOKEN_POOLINGS = ("cls", "avg", "max", "gem")
DEFAULT_GEM_P = 3.0

_NAME_RE = re.compile(r"^(?P<pool>default|avg|max|cls|gem(?P<p>\d+(\.\d+)?)?)(?P<post>-l2|-white(?P<dim>\d+)?)?$")


class InvalidDescriptor(ValueError):
    pass


def _p_text(p: float) -> str:
    return f"{p:g}"


@dataclass(frozen=True)
class Descriptor:
    """A pooling (+ its p for GeM) and a post-processing step; ``pooling="default"`` means the model's own."""

    pooling: str = DEFAULT  # default | avg | max | gem | cls
    p: float = DEFAULT_GEM_P  # GeM's power (1 = average, large = max)
    unit_length: bool = False
    whiten: bool = False  # PCA-whitening (implies unit length before and after)
    whiten_dim: Optional[int] = None  # output dimension; None keeps every component

    def __post_init__(self) -> None:
        if self.pooling not in (DEFAULT, *TOKEN_POOLINGS):
            raise InvalidDescriptor(f"unknown pooling {self.pooling!r}")
        if self.pooling == "gem" and not self.p > 0:
            raise InvalidDescriptor(f"GeM needs p > 0, got {self.p}")
        if self.whiten_dim is not None and (not self.whiten or self.whiten_dim < 1):
            raise InvalidDescriptor("an output dimension needs whitening and must be >= 1")

    @classmethod
    def parse(cls, name: str) -> "Descriptor":
        """``gem3-white512`` -> Descriptor("gem", 3.0, whiten=True, whiten_dim=512); see the module docstring."""
        m = _NAME_RE.match(name.strip().lower())
        if not m:
            raise InvalidDescriptor(
                f"unknown descriptor {name!r}: a pooling (default, avg, max, cls, gem or gem<p> such as gem3 or "
                f"gem4.5) with an optional -l2 (unit length) or -white / -white<dim> (PCA-whitening), e.g. gem3-l2"
            )
        pool, post = m.group("pool"), m.group("post") or ""
        kind = "gem" if pool.startswith("gem") else pool
        p = float(m.group("p")) if m.group("p") else DEFAULT_GEM_P
        dim = int(m.group("dim")) if m.group("dim") else None
        return cls(kind, p, unit_length=post == "-l2", whiten=post.startswith("-white"), whiten_dim=dim)

    @property
    def pooling_name(self) -> str:
        """``avg``, ``max``, ``cls``, ``gem3``, ``gem4.5`` or ``default``."""
        return f"gem{_p_text(self.p)}" if self.pooling == "gem" else self.pooling

    @property
    def post_name(self) -> str:
        if self.whiten:
            return f"-white{self.whiten_dim or ''}"
        return "-l2" if self.unit_length else ""

    @property
    def name(self) -> str:
        return self.pooling_name + self.post_name

    def __str__(self) -> str:
        return self.name

    @property
    def pooled(self) -> "Descriptor":
        """The raw pooling this descriptor post-processes: what the shards of one forward pass hold."""
        return Descriptor(self.pooling, self.p)

    @property
    def normalized(self) -> bool:
        """Whether the final vectors have unit length (the vector set identity's ``normalized``)."""
        return self.unit_length or self.whiten

    def resolved(self, default_pooling: str) -> "Descriptor":
        """``default`` replaced by the model's own pooling (``avg`` for convnets, ``cls`` for ViTs)."""
        return replace(self, pooling=default_pooling) if self.pooling == DEFAULT else self

    def key_part(self, default_pooling: str) -> str:
        """What the identity, folder and collection name record: ``""`` for the model's default pooling, raw or
        unit length (the ``normalized`` flag records that), else the name without ``-l2`` (``gem3``,
        ``gem3-white512``)."""
        d = self.resolved(default_pooling)
        if d.pooling == default_pooling and not d.whiten:
            return ""
        return d.pooling_name + (d.post_name if d.whiten else "")

    def check_for(self, tokens: bool, model: str = "this model") -> None:
        """Refuse a pooling the model has no input for (a class token of a convnet)."""
        allowed = TOKEN_POOLINGS if tokens else MAP_POOLINGS
        if self.pooling != DEFAULT and self.pooling not in allowed:
            raise InvalidDescriptor(
                f"{model} has no {self.pooling} pooling; its poolings are {', '.join(poolings_of(tokens))}"
            )


def parse_descriptors(text: str) -> List[Descriptor]:
    """``avg,gem3-l2`` -> [Descriptor, ...] without repeats, in the order given."""
    out: List[Descriptor] = []
    for part in text.split(","):
        if part.strip():
            d = Descriptor.parse(part)
            if d not in out:
                out.append(d)
    if not out:
        raise InvalidDescriptor("no descriptor given")
    return out


def poolings_of(tokens: bool) -> Sequence[str]:
    """A model's pooling choices as the command line spells them, its default first."""
    return ("cls", "avg", "max", "gem<p>") if tokens else ("avg", "max", "gem<p>")


def default_pooling_of(tokens: bool) -> str:
    return "cls" if tokens else "avg"


def descriptor_label(key_part: str, normalized: bool, default_pooling: str = "") -> str:
    """The name a column, row or title shows for a vector set's recorded descriptor (``key_part`` as
    ``Descriptor.key_part`` wrote it, ``normalized`` its unit-length flag)."""
    base = key_part or default_pooling or DEFAULT
    if normalized and "-white" not in base:
        return base + "-l2"
    return base
