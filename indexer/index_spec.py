"""Which Milvus index a collection's vectors are searched through: its type, build parameters and search knob.

The vectors (embed.common.identity.VectorSetIdentity) do not depend on the index: the index belongs to the
collection, and changing it rebuilds the index over the same rows. FLAT (exhaustive, exact) is the default and the
comparison's reference; every other type here is approximate on a Milvus server. Parameter names, ranges and
defaults are Milvus' own (https://milvus.io/docs/index.md, Milvus 2.3/2.5 docs); where Milvus has no default
(IVF_PQ's ``m``) this module says what it chooses.

Milvus Lite 3 is no place for an approximate index: it accepts HNSW, IVF_FLAT and IVF_SQ8 but searches every
vector exactly (measured, issue 41: recall@10 = 1.000 whatever the parameters), and refuses IVF_PQ and DISKANN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple


class IndexSpecError(ValueError):
    """An index type, parameter or sweep the tool cannot use: the message says what is allowed."""


@dataclass(frozen=True)
class IndexKind:
    """One Milvus index type: its build parameters (Milvus' names, defaults, ranges) and its one search knob."""

    name: str
    build_defaults: Mapping[str, int]
    build_ranges: Mapping[str, Tuple[int, int]]
    search_param: Optional[str]  # the parameter an ANN sweep varies (None: exact search has none)
    search_default: Optional[int]  # what a search uses when none is given (never below k)
    search_range: Tuple[int, int]
    exact: bool
    on_lite: str  # "exact": Lite accepts it and searches exhaustively; "refused": Lite cannot build it
    summary: str


INT_MAX = 2**31 - 1
KINDS: Dict[str, IndexKind] = {
    k.name: k
    for k in (
        IndexKind("FLAT", {}, {}, None, None, (0, 0), True, "exact", "exhaustive search: exact, the reference"),
        IndexKind(
            "IVF_FLAT",
            {"nlist": 128},
            {"nlist": (1, 65536)},
            "nprobe",
            8,
            (1, 65536),
            False,
            "exact",
            "k-means cells, the nprobe nearest searched exhaustively",
        ),
        IndexKind(
            "IVF_SQ8",
            {"nlist": 128},
            {"nlist": (1, 65536)},
            "nprobe",
            8,
            (1, 65536),
            False,
            "exact",
            "IVF with 8-bit scalar-quantised vectors (a quarter of the memory)",
        ),
        IndexKind(
            "IVF_PQ",
            {"nlist": 128, "nbits": 8},  # m: no Milvus default; dim/16 below (see default_m)
            {"nlist": (1, 65536), "m": (1, 65536), "nbits": (1, 16)},
            "nprobe",
            8,
            (1, 65536),
            False,
            "refused",
            "IVF with product-quantised vectors (m sub-vectors of nbits each)",
        ),
        IndexKind(
            "HNSW",
            {"M": 30, "efConstruction": 360},
            {"M": (2, 2048), "efConstruction": (1, INT_MAX)},
            "ef",
            64,  # Milvus' default is the search's limit (top k): ef = 10 loses recall the user never chose to lose
            (1, INT_MAX),
            False,
            "exact",
            "hierarchical navigable small-world graph",
        ),
        IndexKind(
            "DISKANN",
            {},
            {},
            "search_list",
            100,
            (1, INT_MAX),
            False,
            "refused",
            "Vamana graph on disk (needs queryNode.enableDisk on the server)",
        ),
    )
}
INDEX_TYPES: Tuple[str, ...] = tuple(KINDS)
DEFAULT_INDEX = "FLAT"


def index_kind(index_type: str) -> IndexKind:
    kind = KINDS.get(index_type.upper())
    if kind is None:
        raise IndexSpecError(f"unknown index type {index_type!r}: choose one of {', '.join(INDEX_TYPES)}")
    return kind


def default_m(dim: int) -> int:
    """IVF_PQ's ``m`` when none is given (Milvus has no default): 16 dimensions per sub-vector (64 bytes of float32
    become one byte at nbits = 8); Milvus needs m to divide dim, so the largest divisor of dim at most dim/16.
    Finer codes (dim/4: m = 320 at 1280 dims) build too slowly: on 10,000 x 1280 the embedded server had not finished
    after 23 min on 2 busy cores, and an index build holds up every other one on the server."""
    target = max(1, dim // 16)
    return next(m for m in range(target, 0, -1) if dim % m == 0)


@dataclass
class IndexSpec:
    """A collection's index: a Milvus index type and its build parameters (Milvus' names), plus the search
    parameter value searches use unless told otherwise (``search``: {} for FLAT, e.g. {"ef": 64} for HNSW)."""

    index_type: str = DEFAULT_INDEX
    params: Dict[str, int] = field(default_factory=dict)
    search: Dict[str, int] = field(default_factory=dict)

    @property
    def kind(self) -> IndexKind:
        return index_kind(self.index_type)

    @property
    def exact(self) -> bool:
        return self.kind.exact

    @property
    def label(self) -> str:
        """``HNSW (M=16, efConstruction=200)``, ``FLAT``: how status, the app and reports name it."""
        inner = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.index_type} ({inner})" if inner else self.index_type

    def search_params(self, value: Optional[int] = None, k: int = 10) -> Dict[str, int]:
        """The ``params`` of a Milvus search through this index: ``value`` for the knob, else the spec's own, else
        the kind's default; never below k where Milvus requires ef / search_list >= k."""
        knob = self.kind.search_param
        if knob is None:
            return {}
        chosen = value if value is not None else self.search.get(knob, self.kind.search_default)
        assert chosen is not None
        return at_least_limit({knob: int(chosen)}, k)

    def to_dict(self) -> Dict:
        return {"index_type": self.index_type, "params": dict(self.params), "search": dict(self.search)}

    @classmethod
    def from_dict(cls, data: Mapping) -> "IndexSpec":
        return cls(str(data["index_type"]), dict(data.get("params") or {}), dict(data.get("search") or {}))

    def same_index(self, other: "IndexSpec") -> bool:
        """Whether both build the same index (the search default aside: changing it needs no rebuild)."""
        return self.index_type == other.index_type and self.params == other.params


# Milvus refuses a graph search whose candidate list is shorter than the results asked for ("ef(10) should be larger
# than k(11)"); a leave-one-out search asks for k + 1
LIMIT_BOUND = ("ef", "search_list")


def at_least_limit(params: Mapping[str, int], limit: int) -> Dict[str, int]:
    """Search ``params`` with ef / search_list raised to ``limit`` where they are below it."""
    return {k: max(int(v), limit) if k in LIMIT_BOUND else int(v) for k, v in params.items()}


def _parse_assignment(text: str, what: str) -> Tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise IndexSpecError(f"{what} {text!r}: write NAME=VALUE, e.g. M=16")
    return name.strip(), value.strip()


def _as_int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise IndexSpecError(f"{name}={value!r}: a whole number is needed") from None


def _check_range(name: str, value: int, bounds: Tuple[int, int], index_type: str) -> None:
    low, high = bounds
    if not low <= value <= high:
        raise IndexSpecError(f"{index_type} {name}={value} is out of Milvus' range [{low}, {high}]")


def make_index_spec(
    index_type: str, assignments: Sequence[str] = (), dim: Optional[int] = None, search: Sequence[str] = ()
) -> IndexSpec:
    """The spec ``--index TYPE --index-param NAME=VALUE ... --search-param NAME=VALUE`` asks for, with Milvus'
    defaults for the parameters not given, checked against Milvus' names and ranges. ``dim`` (when known) checks
    IVF_PQ's m divides it and supplies m's default."""
    kind = index_kind(index_type)
    params: Dict[str, int] = dict(kind.build_defaults)
    for text in assignments:
        name, value = _parse_assignment(text, "--index-param")
        if name not in kind.build_ranges:
            allowed = ", ".join(kind.build_ranges) or "none"
            raise IndexSpecError(f"{kind.name} has no build parameter {name!r} (Milvus' names: {allowed})")
        params[name] = _as_int(name, value)
        _check_range(name, params[name], kind.build_ranges[name], kind.name)
    if kind.name == "IVF_PQ" and dim is not None:
        params.setdefault("m", default_m(dim))
        if dim % params["m"]:
            raise IndexSpecError(f"IVF_PQ m={params['m']} must divide the vectors' dimension {dim}")
    searches: Dict[str, int] = {}
    for text in search:
        name, value = _parse_assignment(text, "--search-param")
        if name != kind.search_param:
            raise IndexSpecError(f"{kind.name} searches with {kind.search_param or 'no parameter'}, not {name!r}")
        searches[name] = _as_int(name, value)
        _check_range(name, searches[name], kind.search_range, kind.name)
    ordered = {n: params[n] for n in sorted(params, key=list(kind.build_ranges).index)}
    return IndexSpec(kind.name, ordered, searches)


def with_dim(spec: IndexSpec, dim: int) -> IndexSpec:
    """``spec`` for vectors of ``dim`` dimensions: IVF_PQ gets its default m (and a check that m divides dim)."""
    return make_index_spec(
        spec.index_type,
        [f"{k}={v}" for k, v in spec.params.items()],
        dim,
        [f"{k}={v}" for k, v in spec.search.items()],
    )


@dataclass(frozen=True)
class SearchSweep:
    """The values of one index's search knob an ANN evaluation measures, cheapest (smallest) first."""

    param: str
    values: Tuple[int, ...]


def parse_sweep(text: str, index_type: str) -> SearchSweep:
    """``ef=16,32,64`` for HNSW, ``nprobe=1,8,32`` for IVF_*: the knob must be the index's own."""
    kind = index_kind(index_type)
    if kind.search_param is None:
        raise IndexSpecError(f"{kind.name} has no search parameter to sweep (it is exhaustive)")
    name, values = _parse_assignment(text, "--sweep")
    if name != kind.search_param:
        raise IndexSpecError(
            f"{kind.name} is swept over {kind.search_param}, not {name!r}: --sweep {kind.search_param}=..."
        )
    parsed: List[int] = []
    for part in values.split(","):
        if part.strip():
            value = _as_int(name, part.strip())
            _check_range(name, value, kind.search_range, kind.name)
            parsed.append(value)
    if not parsed:
        raise IndexSpecError(f"--sweep {text!r} lists no value")
    return SearchSweep(name, tuple(sorted(set(parsed))))


def default_sweep(index_type: str) -> SearchSweep:
    """What ``indexer ann`` sweeps when no --sweep is given."""
    kind = index_kind(index_type)
    if kind.search_param is None:
        return SearchSweep("", ())
    values = {"ef": (16, 32, 64, 128, 256), "nprobe": (1, 4, 16, 64), "search_list": (16, 32, 64, 128)}
    return SearchSweep(kind.search_param, values[kind.search_param])


def lite_note(spec: IndexSpec) -> Optional[str]:
    """What a build on Milvus Lite says about ``spec`` (None for FLAT); raise for types Lite cannot build."""
    if spec.exact:
        return None
    if spec.kind.on_lite == "refused":
        raise IndexSpecError(
            f"Milvus Lite cannot build {spec.index_type}; build it into a Milvus server: --uri http://HOST:19530"
        )
    return (
        f"Milvus Lite accepts {spec.label} but searches every vector exactly whatever its parameters (measured: "
        f"recall@10 = 1.000 at HNSW M=4, efConstruction=16, ef=10): results and latency are FLAT's. To serve and "
        f"measure an approximate index, build into a Milvus server (--uri http://HOST:19530) and run `indexer ann` there."
    )
