"""The evaluation as typed records, from ``evaluate`` to ``report.json`` to report.md/html and the app's page.

Every figure the comparison reports has one dataclass here, and ``report.json`` is these records
serialised (``ReportDocument.to_json`` / ``from_json``, with ``SCHEMA_VERSION``). Pairs of models are
records naming both models, never keys built from model names. Deliberately free of NumPy, torch and
pymilvus: the Evaluation page reads a report with nothing else loaded.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Type, TypeVar, Union

from embed.common.identity import VectorSetIdentity

if TYPE_CHECKING:
    from indexer.milvus_store import CollectionMeta

SCHEMA_VERSION = 2
# robustness.json (``python -m indexer robustness``), also carried whole by report.json
ROBUSTNESS_SCHEMA_VERSION = 1
CONFIDENCE = 0.95

T = TypeVar("T")


def level_text(level: float) -> str:
    """A confidence level in words, as every interval, header and protocol names it: 0.95 -> '95%',
    0.975 -> '97.5%'."""
    return f"{level * 100:.4g}%"


class ReportSchemaError(ValueError):
    """A report.json this version cannot read (another schema version, or not a report)."""


@dataclass
class Interval:
    """A mean over queries with its percentile-bootstrap interval at ``level``."""

    mean: float
    low: float
    high: float
    n: int
    level: float = CONFIDENCE

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def words(self, signed: bool = False, negate: bool = False) -> str:
        """The interval in a sentence, the same in every one: '95% CI -0.089 to +0.013' (``signed``, for a
        difference); ``negate``: the interval of the opposite difference (b - a for a - b)."""
        low, high = (-self.high, -self.low) if negate else (self.low, self.high)
        spec = "+.3f" if signed else ".3f"
        return f"{level_text(self.level)} CI {low:{spec}} to {high:{spec}}"


@dataclass
class McNemar:
    only_a: int  # queries A gets right and B wrong
    only_b: int
    both: int
    neither: int
    p_value: float  # exact two-sided binomial test on the discordant queries


@dataclass
class Protocol:
    name: str
    distance: str
    features: str
    precision_at_k: str
    recall_at_k: str
    r_precision: str
    map_at_r: str
    knn_top1: str
    excluded: str
    note: str
    split: str = ""
    dataset: str = ""
    ks: List[int] = field(default_factory=list)
    knn_k: int = 20
    computation: str = ""
    labels: str = ""  # how the images are labelled, in words (CollectionMeta.labels_text)


@dataclass
class DinoKnn:
    top1: float
    top5: float
    queries: int
    database: int
    protocol: str
    seconds: float


@dataclass
class NaiveTiming:
    """The evaluation done naively (one Milvus search per query), timed against the exact computation."""

    queries: int
    seconds: float
    seconds_for_all: float
    extrapolated: bool
    exact_seconds: float
    exact_over_naive: float
    naive_precision_at_1: float


@dataclass
class MilvusCheck:
    queries: int
    k: int
    agree: int
    disagree: int
    collection: str  # "as built" or "temporary copy" (the other feature variant)
    rule: str
    examples: List[str] = field(default_factory=list)


@dataclass
class ModelResult:
    """One model and feature variant: the means of every retrieval metric (per-query values stay in memory)."""

    model: str
    features: str  # "raw" or "normalized"
    n: int
    n_queries: int
    precision: Dict[str, float]  # k -> P@k
    recall: Dict[str, float]  # k -> R@k
    r_precision: float
    map_at_r: float
    knn_top1: float
    weights: str
    random_weights: bool
    collection: str
    seconds: float
    index: str = "FLAT"  # the collection's index (IndexSpec.label); the figures are exact whatever it is
    excluded_singletons: int = 0
    k_searched: int = 0
    # the collection's identity as evaluated: a later build that makes its vectors otherwise makes the report stale
    identity: Optional[VectorSetIdentity] = None
    dino_knn: Optional[DinoKnn] = None
    naive: Optional[NaiveTiming] = None
    milvus_check: Optional[MilvusCheck] = None


@dataclass
class Evaluation:
    protocol: Protocol
    results: List[ModelResult]


@dataclass
class MetricInterval:
    metric: str  # "P@1", "MAP@R", "DINO kNN top-1", ...
    interval: Interval


@dataclass
class ModelIntervals:
    """Every metric of one model and variant with its interval."""

    model: str
    features: str
    metrics: List[MetricInterval]

    def get(self, metric: str) -> Optional[Interval]:
        return next((m.interval for m in self.metrics if m.metric == metric), None)


@dataclass
class PairedMetric:
    metric: str
    difference: Interval  # mean(a) - mean(b) over the same queries, paired bootstrap
    p_value: Optional[float] = None  # exact McNemar, for binary measures


@dataclass
class PairComparison:
    a: str
    b: str
    metrics: List[PairedMetric]
    mcnemar_p_at_1: McNemar
    sentences: List[str]


@dataclass
class ClassFigure:
    class_id: str
    class_name: str
    gain: float  # this model's P@10 minus the other models' mean
    p_at_10: List[float]  # every model's, in PerClass.models order


@dataclass
class ClassMovers:
    model: str
    gains: List[ClassFigure]
    losses: List[ClassFigure]


@dataclass
class PerClass:
    models: List[str]
    class_ids: List[str]
    p_at_10: List[List[float]]  # [model][class], in ``models`` and ``class_ids`` order
    movers: List[ClassMovers]


@dataclass
class Agreement:
    a: str
    b: str
    top_overlap: float  # mean share of each query's top-10 the two models have in common
    top: int
    both_right: float  # P@1 shares of the queries
    only_a: float
    only_b: float
    neither: float
    queries: int


@dataclass
class ModelInterval:
    model: str
    interval: Interval


@dataclass
class PairInterval:
    a: str
    b: str
    difference: Interval


@dataclass
class AppearanceMeasure:
    measure: str  # "colour" or "structure"
    baseline: Interval  # random same-class pairs
    models: List[ModelInterval]  # each model's same-class neighbours
    versus_baseline: List[ModelInterval]  # paired difference model - baseline
    pairs: List[PairInterval]


@dataclass
class Appearance:
    queries: int
    neighbours: str
    baseline: str
    measures: List[AppearanceMeasure]
    sentences: List[str]


@dataclass
class DinoRow:
    model: str
    top1: Interval
    protocol: str


@dataclass
class AccuracyCheck:
    """``python -m embed check``: the model's own ImageNet classifier on the same images."""

    top1: float
    top5: float
    n: int
    weights_source: str = ""
    path: str = ""


@dataclass
class AccuracyRow:
    model: str
    check: Optional[AccuracyCheck]


@dataclass
class Accuracy:
    rows: List[AccuracyRow]
    sentences: List[str]


@dataclass
class GalleryColumn:
    model: str
    ids: List[int]
    hits: List[bool]
    p_at_10: float


@dataclass
class Gallery:
    query_row: int
    query_id: int
    relpath: str
    class_id: str
    columns: List[GalleryColumn]
    png: str


@dataclass
class Figures:
    precision_at_k: str
    confidence_intervals: str
    per_class: Optional[str] = None


@dataclass
class Bootstrap:
    resamples: int
    seed: int
    method: str = "percentile bootstrap over queries"
    level: float = CONFIDENCE


@dataclass
class ReportDocument:
    protocol: Protocol
    variant_compared: str
    bootstrap: Bootstrap
    results: List[ModelResult]
    intervals: List[ModelIntervals]
    pairs: List[PairComparison]
    per_class: Optional[PerClass]
    agreement: List[Agreement]
    appearance: Optional[Appearance]
    dino_knn: List[DinoRow]
    accuracy: Accuracy
    galleries: List[Gallery]
    figures: Figures
    sentences: List[str]
    # `python -m indexer robustness --report DIR`'s document (robustness.json, its own schema_version): one
    # record per model, family and severity, the severity's parameter in its units, measures under plain names
    robustness: Optional[Dict[str, Any]] = None
    schema_version: int = SCHEMA_VERSION

    @property
    def models(self) -> List[str]:
        return list(dict.fromkeys(r.model for r in self.results))

    def changed_collections(self, collections: Mapping[str, "CollectionMeta"]) -> List[str]:
        """How each collection this report evaluated differs now (a build ran since), a sentence each; looked up
        by name (``collections``: name -> metadata), so that a model indexed for another dataset as well is
        compared with the collection the report read."""
        lines = []
        for result in self.results:
            meta = collections.get(result.collection)
            if meta is None or result.features != self.variant_compared:
                continue
            same = None if result.identity is None else result.identity.compare(meta.identity)
            if meta.rows != result.n:
                lines.append(f"{result.model} now holds {meta.rows:,} images; the report evaluated {result.n:,}.")
            elif meta.weights_label != result.weights:
                lines.append(f"{result.model} was rebuilt with other weights ({meta.weights_label}).")
            elif same is not None and not same.interchangeable:
                lines.append(
                    f"{result.model} was rebuilt and makes its vectors otherwise ({same.words('evaluated', 'now')})."
                )
            elif not meta.complete:
                lines.append(f"{result.model}'s collection is being built, or its last build did not finish.")
        return lines

    @property
    def random_weight_models(self) -> List[str]:
        return sorted({r.model for r in self.results if r.random_weights})

    def to_json(self) -> str:
        return json.dumps(to_plain(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "ReportDocument":
        data = json.loads(text)
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version != SCHEMA_VERSION:
            raise ReportSchemaError(
                f"report schema version {version!r}, this version reads {SCHEMA_VERSION}: write the report again "
                f"with `python -m indexer evaluate ... --report DIR`"
            )
        return from_plain(cls, data)


def read_robustness(folder: Union[str, Path]) -> Optional[Dict[str, Any]]:
    """The robustness document ``python -m indexer robustness --report DIR`` wrote into ``folder``, if it did.

    A dict, not records: its measures are read by name by other tools, and each record names its severity's
    parameter in that parameter's units (``"size_px": 32``), a key that depends on the family.
    """
    path = Path(folder) / "robustness.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != ROBUSTNESS_SCHEMA_VERSION:
        raise ReportSchemaError(
            f"{path}: robustness schema version {version!r}, this version reads {ROBUSTNESS_SCHEMA_VERSION}: "
            f"run `python -m indexer robustness ... --report {folder}` again"
        )
    return data


def to_plain(value: Any) -> Any:
    """Dataclasses, lists and dicts as JSON values; NaN becomes null (JSON has no NaN)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item") and callable(value.item):  # a NumPy scalar that slipped through
        return to_plain(value.item())
    return value


def from_plain(cls: Type[T], data: Any) -> T:
    """The dataclass ``cls`` from its ``to_plain`` form, field types followed recursively."""
    return typing.cast(T, _build(cls, data))


def _build(tp: Any, data: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if data is None else _build(args[0], data)
    if origin in (list, List):
        (item,) = typing.get_args(tp)
        return [_build(item, v) for v in data]
    if origin in (dict, Dict):
        _, item = typing.get_args(tp)
        return {k: _build(item, v) for k, v in data.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp, vars(sys.modules[tp.__module__]))
        names = {f.name for f in dataclasses.fields(tp)}
        return tp(**{k: _build(hints[k], v) for k, v in data.items() if k in names})
    if tp is float:
        return float("nan") if data is None else float(data)
    return data
