"""The record of one image explained on the Explanations page: each method's map and scores on each model, and how
alike the two models' maps are.

`explorer.explanations_view.explain_pair` builds a `PairExplanation`; the page, its summary tables and the case
report (`explorer.report`) read its attributes. It lives in the user's session state, and ``to_json()`` /
`PairExplanation.from_json` carry it as JSON: ``"version"``, the explained class and, per method in the order run,
each model's map (rows of floats, exactly as computed; a NaN map's cells as null) and scores, and the two maps'
agreement. A newer version, or a field missing or of the wrong kind, is refused with `PairExplanationError`
naming the field. A score that was measured but is undefined (a constant map has no rank correlation) is None
inside its measured group; a group not measured is None as a whole, so the page shows a column only for what ran.
Nothing here imports torch or Streamlit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

VERSION = 1


class PairExplanationError(ValueError):
    """A pair explanation this code cannot read: a newer version, or a field missing or of the wrong kind."""


@dataclass(frozen=True)
class Passes:
    """Images pushed through the model to make one map (`core.explainer.Explanation.passes`)."""

    forward: int
    backward: int


@dataclass(frozen=True)
class Curves:
    """The map's deletion and insertion AUC on its own model's probability of the explained class."""

    deletion_auc: float
    insertion_auc: float


@dataclass(frozen=True)
class Sanity:
    """The sanity check: rank correlation of the map with the map after re-initialising ``layers`` (None: a map
    without a rank, e.g. constant), and those layers, head first."""

    spearman: float | None
    layers: tuple[str, ...]


@dataclass(frozen=True)
class Lesion:
    """The map against the true lesion: pointing-game hit, share of relevance inside, top-5 % IoU (None: undefined,
    e.g. a map of NaN)."""

    pointing_hit: float | None
    energy: float | None
    mask_iou: float | None


@dataclass(frozen=True)
class MapAgreement:
    """How alike the teacher's and the student's maps of one method are: rank correlation and top-10 % IoU."""

    spearman: float | None
    iou: float | None


# A record holding a map keeps ``is`` for ``==`` (an array has no single truth value): compare their ``to_json()``.
@dataclass(frozen=True, eq=False)
class ModelExplanation:
    """One model's map of the image with its cost and scores.

    Attributes:
        heatmap: float32 (H, W) in [0, 1] at the model's input size. layer: the layer a CAM method used (None for
            the other methods). curves, sanity, lesion: None where not measured (switched off; no lesion mask).
    """

    heatmap: np.ndarray
    seconds: float
    predicted_seconds: float
    passes: Passes
    layer: str | None = None
    curves: Curves | None = None
    sanity: Sanity | None = None
    lesion: Lesion | None = None

    def to_json(self) -> dict:
        return {"heatmap": _map_json(self.heatmap), "seconds": self.seconds,
                "predicted_seconds": self.predicted_seconds, "passes": _group_json(self.passes), "layer": self.layer,
                "curves": _group_json(self.curves), "sanity": _group_json(self.sanity),
                "lesion": _group_json(self.lesion)}

    @classmethod
    def from_json(cls, block: Any, path: str) -> ModelExplanation:
        read = _Reader(block, path, _names(cls))
        passes, curves = read.group("passes"), read.group("curves", optional=True)
        sanity, lesion = read.group("sanity", optional=True), read.group("lesion", optional=True)
        return cls(
            read.heatmap("heatmap"), read.number("seconds"), read.number("predicted_seconds"),
            Passes(passes.integer("forward"), passes.integer("backward")), read.text("layer", optional=True),
            curves and Curves(curves.number("deletion_auc"), curves.number("insertion_auc")),
            sanity and Sanity(sanity.number("spearman", optional=True),
                              tuple(sanity.text(f"layers[{i}]", value) for i, value in
                                    enumerate(sanity.field("layers", list)))),
            lesion and Lesion(*(lesion.number(name, optional=True) for name in ("pointing_hit", "energy", "mask_iou"))))


@dataclass(frozen=True, eq=False)
class MethodPair:
    """One method's explanations: ``models`` by the app's model key (``teacher``, ``student``), and the agreement
    of the teacher's and the student's maps (None unless both were explained)."""

    models: Mapping[str, ModelExplanation]
    agreement: MapAgreement | None = None

    def to_json(self) -> dict:
        return {"models": {key: m.to_json() for key, m in self.models.items()},
                "agreement": _group_json(self.agreement)}

    @classmethod
    def from_json(cls, block: Any, path: str) -> MethodPair:
        read = _Reader(block, path, _names(cls))
        agreement = read.group("agreement", optional=True)
        return cls({key: ModelExplanation.from_json(m, f"{path}.models.{key}")
                    for key, m in read.field("models", dict).items()},
                   agreement and MapAgreement(agreement.number("spearman", optional=True),
                                              agreement.number("iou", optional=True)))


@dataclass(frozen=True, eq=False)
class PairExplanation:
    """Every method's explanations of one image for one class: ``methods`` by method key, in the order run."""

    target: int
    methods: Mapping[str, MethodPair]

    def to_json(self) -> dict:
        return {"version": VERSION, "target": self.target,
                "methods": {method: pair.to_json() for method, pair in self.methods.items()}}

    @classmethod
    def from_json(cls, block: Any) -> PairExplanation:
        """The record of a parsed JSON object (`PairExplanationError` for one this code cannot read)."""
        read = _Reader(block, "", ("version", *_names(cls)))
        version = read.integer("version")
        if version != VERSION:
            raise PairExplanationError(f"pair explanation: field 'version' is {version}; this code reads version "
                                       f"{VERSION} (update the code, or explain the image again)")
        return cls(read.integer("target"), {method: MethodPair.from_json(pair, f"methods.{method}")
                                            for method, pair in read.field("methods", dict).items()})


def _group_json(group: Passes | Curves | Sanity | Lesion | MapAgreement | None) -> dict | None:
    return None if group is None else {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(group).items()}


def _map_json(heatmap: np.ndarray) -> list[list[float | None]]:
    """A map's rows as floats (float32 values are exact as JSON numbers); NaN, which JSON lacks, as null."""
    rows = np.asarray(heatmap, dtype=float).tolist()
    return [[None if v != v else v for v in row] for row in rows] if np.isnan(heatmap).any() else rows


class _Reader:
    """Reads one JSON object's fields, refusing an unknown, missing or mistyped one by its full name (``path``: the
    object's own, empty at the top)."""

    def __init__(self, block: Any, path: str, known: tuple[str, ...]):
        if not isinstance(block, dict):
            raise PairExplanationError(f"pair explanation: {f'field {path!r}' if path else 'the JSON'} is "
                                       f"{_kind(block)}, not an object")
        self.block, self.path = block, path
        unknown = sorted(set(block) - set(known))
        if unknown:
            raise self.refuse(unknown[0], f"is not one this code reads ({', '.join(known)})")

    def name(self, field: str) -> str:
        return f"{self.path}.{field}" if self.path else field

    def refuse(self, field: str, problem: str) -> PairExplanationError:
        return PairExplanationError(f"pair explanation: field {self.name(field)!r} {problem}")

    def field(self, name: str, kind: type | tuple[type, ...], value: Any = None, optional: bool = False) -> Any:
        """``value`` (by default the field ``name``), refused unless of ``kind``; None where ``optional``."""
        value = self.block.get(name) if value is None else value
        if value is None:
            if optional:
                return None
            raise self.refuse(name, "is missing")
        if not isinstance(value, kind) or isinstance(value, bool):
            raise self.refuse(name, f"is {_kind(value)}, not {_KINDS[kind]}")
        return value

    def number(self, name: str, optional: bool = False) -> float | None:
        value = self.field(name, (int, float), optional=optional)
        return None if value is None else float(value)

    def integer(self, name: str) -> int:
        return self.field(name, int)

    def text(self, name: str, value: Any = None, optional: bool = False) -> str | None:
        return self.field(name, str, value, optional)

    def group(self, name: str, optional: bool = False) -> _Reader | None:
        """A nested record's object (`_GROUPS` names its record); None where ``optional`` and absent."""
        value = self.field(name, dict, optional=optional)
        return None if value is None else _Reader(value, self.name(name), _names(_GROUPS[name]))

    def heatmap(self, name: str) -> np.ndarray:
        rows = self.field(name, list)
        width = len(rows[0]) if rows and isinstance(rows[0], list) else 0
        if not width or any(not isinstance(row, list) or len(row) != width for row in rows):
            raise self.refuse(name, "is not a map (rows of one length, at least one value)")
        if any(v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))) for row in rows for v in row):
            raise self.refuse(name, "holds a value that is neither a number nor null")
        return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float32)


_GROUPS = {"passes": Passes, "curves": Curves, "sanity": Sanity, "lesion": Lesion, "agreement": MapAgreement}
_KINDS = {int: "an integer", (int, float): "a number", str: "a string", list: "a list", dict: "an object"}


def _names(record: type) -> tuple[str, ...]:
    """A record's fields: the keys its JSON object may hold."""
    return tuple(f.name for f in fields(record))


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)
