"""The faithfulness study as a record: what `core.faithfulness_study` writes under ``"faithfulness"`` in a
dataset's results.json, and what the results pages, the Faithfulness page and the student frontier read.

On disk the study keeps the shape it has always had, plus a ``"version"``; a block without one is version 1 (the
same shape). A newer version, or a block that lacks a field or holds the wrong kind of value, is refused with a
`StudyFormatError` naming the file and the field, so that a reader shows a notice instead of a wrong number.
A score of one model's map on the other model's probability is stored under its pair's name
(``student_on_teacher``), looked up in `PAIRS`, never taken apart. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from core.roles import DISTILLED, STUDIED, TEACHER, Role

STUDY_VERSION = 1
CURVE_METRICS = ("deletion_auc", "insertion_auc")
T = TypeVar("T")


class StudyFormatError(ValueError):
    """A study block that cannot be read; the message names its file and field."""


@dataclass(frozen=True)
class Pair:
    """Whose map is scored on whose predicted-class probability, and the pair's name in the JSON."""

    explainer: Role
    scorer: Role
    key: str

    @property
    def cross(self) -> bool:
        return self.explainer != self.scorer


# Every pair the study scores, in the order it scores and writes them.
PAIRS: tuple[Pair, ...] = (Pair(TEACHER, TEACHER, "teacher"), Pair(TEACHER, DISTILLED, "teacher_on_student"),
                           Pair(DISTILLED, TEACHER, "student_on_teacher"), Pair(DISTILLED, DISTILLED, "student"))


def pair(explainer: Role, scorer: Role) -> Pair:
    """The pair of ``explainer``'s map scored on ``scorer``'s probability."""
    return next(p for p in PAIRS if (p.explainer, p.scorer) == (explainer, scorer))


@dataclass(frozen=True)
class Distribution:
    """A per-image score: mean, median, quartiles and n over the finite values (none of them when no value is
    finite), and every value in image order, rounded to 4 decimals (None where not finite, e.g. a constant map's
    rank correlation)."""

    n: int
    values: tuple[float | None, ...]
    mean: float | None = None
    median: float | None = None
    q25: float | None = None
    q75: float | None = None

    @classmethod
    def of(cls, values) -> Distribution:
        every = np.asarray(values, dtype=np.float64)
        finite = every[np.isfinite(every)]
        listed = tuple(round(float(x), 4) if np.isfinite(x) else None for x in every)
        if finite.size == 0:
            return cls(0, listed)
        q25, median, q75 = np.percentile(finite, [25, 50, 75])
        return cls(int(finite.size), listed, float(finite.mean()), float(median), float(q25), float(q75))

    def finite(self) -> list[float]:
        return [v for v in self.values if v is not None]

    def to_json(self) -> dict:
        stats = {} if self.mean is None else {"mean": self.mean, "median": self.median, "q25": self.q25,
                                              "q75": self.q75}
        return {**stats, "n": self.n, "values": list(self.values)}

    @classmethod
    def from_json(cls, block: Any, where: str) -> Distribution:
        values = tuple(None if v is None else float(v) for v in _field(block, "values", where))
        stats = {k: float(block[k]) for k in ("mean", "median", "q25", "q75") if block.get(k) is not None}
        return cls(int(_field(block, "n", where)), values, **stats)


@dataclass(frozen=True)
class Comparison:
    """A method's per-image scores against the random map's on the same images (`core.stats.paired_difference`,
    without the differences themselves)."""

    mean: float
    n: int
    test: str
    std: float
    ci: tuple[float, float]
    p_value: float
    p_sign_flip: float

    def verdict(self, better: str) -> str:
        """"yes" / "no: worse" / "not shown": whether the paired 95% interval excludes 0 on the side that is better
        (``better`` is "lower" or "higher"); an undefined (NaN) interval shows nothing."""
        lo, hi = self.ci
        good, bad = (hi < 0, lo > 0) if better == "lower" else (lo > 0, hi < 0)
        return "yes" if good else ("no: worse" if bad else "not shown")

    def to_json(self) -> dict:
        return {"mean": self.mean, "n": self.n, "test": self.test, "std": self.std, "ci": list(self.ci),
                "p_value": self.p_value, "p_sign_flip": self.p_sign_flip}

    @classmethod
    def from_json(cls, block: Any, where: str) -> Comparison:
        lo, hi = _field(block, "ci", where)
        number = lambda name: float(_field(block, name, where))  # noqa: E731
        return cls(number("mean"), int(_field(block, "n", where)), str(_field(block, "test", where)), number("std"),
                   (float(lo), float(hi)), number("p_value"), number("p_sign_flip"))


@dataclass(frozen=True)
class CurveScores:
    """One map set's deletion and insertion AUCs on one model's probability, each against the random map's on the
    same images (``vs_random`` by metric; empty for the random map itself)."""

    deletion_auc: Distribution
    insertion_auc: Distribution
    vs_random: Mapping[str, Comparison]

    def to_json(self) -> dict:
        out = {"deletion_auc": self.deletion_auc.to_json(), "insertion_auc": self.insertion_auc.to_json()}
        if self.vs_random:
            out["vs_random"] = {metric: c.to_json() for metric, c in self.vs_random.items()}
        return out

    @classmethod
    def from_json(cls, block: Any, where: str) -> CurveScores:
        curves = [_distribution(block, m, where) for m in CURVE_METRICS]
        versus = block.get("vs_random") or {}
        return cls(*curves, {m: _read(Comparison.from_json, _field(versus, m, f"{where}.vs_random"),
                                      f"{where}.vs_random.{m}") for m in CURVE_METRICS if versus})


@dataclass(frozen=True)
class Agreement:
    """Teacher-student agreement of the two maps of each image: rank correlation and top-10 % IoU."""

    spearman: Distribution
    iou: Distribution

    def to_json(self) -> dict:
        return {"spearman": self.spearman.to_json(), "iou": self.iou.to_json()}

    @classmethod
    def from_json(cls, block: Any, where: str) -> Agreement:
        return cls(_distribution(block, "spearman", where), _distribution(block, "iou", where))


@dataclass(frozen=True)
class Localisation:
    """Where lesion masks exist: pointing-game hit, energy inside the lesion, top-5 % IoU (NaN: no lesion)."""

    hit: Distribution
    energy: Distribution
    iou: Distribution

    def to_json(self) -> dict:
        return {"hit": self.hit.to_json(), "energy": self.energy.to_json(), "iou": self.iou.to_json()}

    @classmethod
    def from_json(cls, block: Any, where: str) -> Localisation:
        return cls(*(_distribution(block, k, where) for k in ("hit", "energy", "iou")))


@dataclass(frozen=True)
class MethodScores:
    """Everything the study measured of one explainer or baseline map.

    Attributes:
        images: how many study images it ran on (the slow methods: the seeded subset).
        baseline: a map made without a model (random, centre, mask prior): one map whichever model it is said to
            explain, so it has no cross-model pairs, no agreement and no times.
        curves: its deletion/insertion scores by the pair scored.
        agreement, seconds, localisation: None where not measured (a baseline; a study of one model's maps;
            a dataset without lesion masks). ``seconds`` and ``localisation`` are by the model whose map it is.
    """

    images: int
    baseline: bool
    curves: Mapping[Pair, CurveScores]
    agreement: Agreement | None = None
    seconds: Mapping[Role, Distribution] | None = None
    localisation: Mapping[Role, Localisation] | None = None

    def score(self, explainer: Role, scorer: Role) -> CurveScores | None:
        """``explainer``'s map scored on ``scorer``'s probability; a baseline's map is the same whichever model, so
        its score on the scorer is its own there. None if not scored."""
        return self.curves.get(pair(scorer if self.baseline else explainer, scorer))

    def to_json(self) -> dict:
        out: dict = {"images": self.images, "baseline": self.baseline}
        out.update({p.key: scores.to_json() for p, scores in self.curves.items()})
        if self.agreement is not None:
            out["agreement"] = self.agreement.to_json()
        if self.seconds is not None:
            out["seconds"] = {r.key: d.to_json() for r, d in self.seconds.items()}
        if self.localisation is not None:
            out["localisation"] = {r.key: loc.to_json() for r, loc in self.localisation.items()}
        return out

    @classmethod
    def from_json(cls, block: Any, where: str) -> MethodScores:
        images, named = _field(block, "images", where), {p.key: p for p in PAIRS}
        unknown = set(block) - set(named) - {"images", "baseline", "agreement", "seconds", "localisation"}
        if unknown:
            raise StudyFormatError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        curves = {named[k]: _read(CurveScores.from_json, v, f"{where}.{k}") for k, v in block.items() if k in named}
        agreement = block.get("agreement")
        return cls(int(images), bool(_field(block, "baseline", where)), curves,
                   None if agreement is None else _read(Agreement.from_json, agreement, f"{where}.agreement"),
                   _by_role(block.get("seconds"), Distribution.from_json, f"{where}.seconds", optional=True),
                   _by_role(block.get("localisation"), Localisation.from_json, f"{where}.localisation", optional=True))


@dataclass(frozen=True)
class CascadeStep:
    """One step of the model-randomisation cascade: the layers re-initialised so far (top first, this one last) and
    how the map then compares with the trained model's map."""

    layer: str
    spearman: Distribution
    iou: Distribution

    @property
    def median_correlation(self) -> float | None:
        """The cascade's statistic, drawn per step on the page and given at the last step in the results: the
        median rank correlation with the trained map (None: no image kept a non-constant map)."""
        return self.spearman.median

    def to_json(self) -> dict:
        return {"layer": self.layer, "spearman": self.spearman.to_json(), "iou": self.iou.to_json()}

    @classmethod
    def from_json(cls, block: Any, where: str) -> CascadeStep:
        return cls(str(_field(block, "layer", where)), _distribution(block, "spearman", where),
                   _distribution(block, "iou", where))


@dataclass(frozen=True)
class StudySettings:
    """The settings a study records beside its scores (`core.faithfulness_study.StudyConfig` less what belongs to
    the machine: paths and threads)."""

    dataset: str
    images: int | None
    slow_images: int
    sanity_images: int
    methods: tuple[str, ...]
    steps: int
    seed: int
    explained: tuple[Role, ...] = STUDIED  # whose maps were made (studies before the student frontier: both)

    def to_json(self) -> dict:
        return {"dataset": self.dataset, "images": self.images, "slow_images": self.slow_images,
                "sanity_images": self.sanity_images, "methods": list(self.methods), "steps": self.steps,
                "seed": self.seed, "explained": [r.key for r in self.explained]}

    @classmethod
    def from_json(cls, block: Any, where: str) -> StudySettings:
        images = _field(block, "images", where)
        explained = tuple(_studied(k, f"{where}.explained") for k in block.get("explained", [r.key for r in STUDIED]))
        return cls(str(_field(block, "dataset", where)), None if images is None else int(images),
                   int(_field(block, "slow_images", where)), int(_field(block, "sanity_images", where)),
                   tuple(str(m) for m in _field(block, "methods", where)), int(_field(block, "steps", where)),
                   int(_field(block, "seed", where)), explained)


SCORING = ("probability of the scoring model's predicted class; maps explain the explaining model's predicted "
           "class; deletion to the mean colour, insertion from a blurred image")


@dataclass(frozen=True)
class FaithfulnessStudy:
    """One study of a dataset's shipped teacher and distilled student (see `core.faithfulness_study`).

    Attributes:
        config: its settings. images: how many test images. slow_subset: the positions (among them) the slow
            methods ran on. test_fingerprint: the test split's fingerprint. test_index: each image's index in the
            test split as the app numbers it. true_class, predicted (by model): classes per image.
        agreement_of_predictions: the share of images both models predict the same class of.
        checkpoints: the sha256 of each model's checkpoint, so that a study of older checkpoints reads as stale.
        input_size: each model's input side. tolerance_px: the pointing game's tolerance (None: no lesion masks).
        methods: each explainer's and baseline's scores, in the order made. sanity: each cheap method's
            randomisation cascade by model. environment: the machine. scores_from_earlier_study: the models whose
            scores were taken over from the study before (unchanged checkpoints). scoring: what a score is of.
    """

    config: StudySettings
    images: int
    slow_subset: tuple[int, ...]
    test_fingerprint: str
    test_index: tuple[int, ...]
    true_class: tuple[int, ...]
    predicted: Mapping[Role, tuple[int, ...]]
    agreement_of_predictions: float
    checkpoints: Mapping[Role, str]
    input_size: Mapping[Role, int]
    tolerance_px: int | None
    methods: Mapping[str, MethodScores]
    sanity: Mapping[str, Mapping[Role, tuple[CascadeStep, ...]]]
    environment: Mapping[str, Any]
    scores_from_earlier_study: tuple[Role, ...] = ()
    scoring: str = SCORING

    def score(self, method: str, explainer: Role, scorer: Role) -> CurveScores | None:
        """One method's ``explainer`` map scored on ``scorer``'s probability (see `MethodScores.score`)."""
        found = self.methods.get(method)
        return found.score(explainer, scorer) if found else None

    def cascade(self, method: str, role: Role) -> tuple[CascadeStep, ...]:
        """The randomisation cascade of one method's maps of one model, top layer first (empty if not run)."""
        return self.sanity.get(method, {}).get(role, ())

    def cascade_end(self, method: str, role: Role) -> CascadeStep | None:
        """The cascade's last step, every layer re-initialised (None if not run)."""
        steps = self.cascade(method, role)
        return steps[-1] if steps else None

    def is_stale(self, digests: Mapping[Role, str | None]) -> bool:
        """True when the checkpoints shipped now (sha256 by model, None if missing) are not those it scored."""
        return any(digests.get(r) != sha for r, sha in self.checkpoints.items())

    def positions(self, values: tuple) -> tuple[int, ...]:
        """The study images (positions among `images`) a method's per-image ``values`` are of: all of them, or the
        slow methods' seeded subset."""
        return tuple(range(self.images)) if len(values) == self.images else self.slow_subset

    def to_json(self) -> dict:
        """The block written under ``"faithfulness"``: version 1's shape, with its version."""
        return {
            "version": STUDY_VERSION, "config": self.config.to_json(), "images": self.images,
            "slow_subset": list(self.slow_subset), "test_fingerprint": self.test_fingerprint,
            "test_index": list(self.test_index), "true_class": list(self.true_class),
            "predicted": _keyed(self.predicted, list), "agreement_of_predictions": self.agreement_of_predictions,
            "checkpoints": _keyed(self.checkpoints), "input_size": _keyed(self.input_size),
            "tolerance_px": self.tolerance_px, "methods": {name: m.to_json() for name, m in self.methods.items()},
            "sanity": {name: _keyed(by_role, lambda steps: [s.to_json() for s in steps])
                       for name, by_role in self.sanity.items()},
            "environment": dict(self.environment),
            "scores_from_earlier_study": [r.key for r in self.scores_from_earlier_study], "scoring": self.scoring}

    @classmethod
    def from_json(cls, block: Any, source: str = "results.json") -> FaithfulnessStudy:
        """Read a ``"faithfulness"`` block (``source``: the file it came from, named in any refusal)."""
        where = f"{source}: faithfulness"
        if not isinstance(block, dict):
            raise StudyFormatError(f"{where}: expected an object, found {type(block).__name__}")
        version = block.get("version", 1)
        if version != STUDY_VERSION:
            raise StudyFormatError(f"{where}: version {version!r} is not one this code reads (version "
                                   f"{STUDY_VERSION}); update the code, or rerun the study to write it anew")
        return _read(_study_from_json, block, where)


def _study_from_json(block: dict, where: str) -> FaithfulnessStudy:
    def read(name: str, convert: Callable[[Any], T]) -> T:
        return _read(lambda value, _: convert(value), _field(block, name, where), f"{where}.{name}")

    ints = lambda values: tuple(int(v) for v in values)  # noqa: E731
    methods, sanity = read("methods", dict), read("sanity", dict)
    return FaithfulnessStudy(
        _read(StudySettings.from_json, _field(block, "config", where), f"{where}.config"),
        read("images", int), read("slow_subset", ints), read("test_fingerprint", str), read("test_index", ints),
        read("true_class", ints),
        _by_role(_field(block, "predicted", where), lambda v, _: ints(v), f"{where}.predicted"),
        read("agreement_of_predictions", float),
        _by_role(_field(block, "checkpoints", where), lambda v, _: str(v), f"{where}.checkpoints"),
        _by_role(_field(block, "input_size", where), lambda v, _: int(v), f"{where}.input_size"),
        read("tolerance_px", lambda v: None if v is None else int(v)),
        {str(name): _read(MethodScores.from_json, m, f"{where}.methods.{name}") for name, m in methods.items()},
        {str(name): _by_role(by_role, lambda steps, at: tuple(_read(CascadeStep.from_json, s, f"{at}[{i}]")
                                                             for i, s in enumerate(steps)), f"{where}.sanity.{name}")
         for name, by_role in sanity.items()},
        read("environment", dict),
        tuple(_studied(k, f"{where}.scores_from_earlier_study") for k in block.get("scores_from_earlier_study", [])),
        str(block.get("scoring", SCORING)))


def _field(block: Any, name: str, where: str) -> Any:
    if not isinstance(block, dict):
        raise StudyFormatError(f"{where}: expected an object, found {type(block).__name__}")
    if name not in block:
        raise StudyFormatError(f"{where}: no {name!r}")
    return block[name]


def _distribution(block: Any, name: str, where: str) -> Distribution:
    return _read(Distribution.from_json, _field(block, name, where), f"{where}.{name}")


def _read(parse: Callable[[Any, str], T], block: Any, where: str) -> T:
    """``parse(block, where)``, a value of the wrong kind refused as a `StudyFormatError` naming ``where``."""
    try:
        return parse(block, where)
    except StudyFormatError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise StudyFormatError(f"{where}: {type(e).__name__}: {e}") from e


def _studied(key: Any, where: str) -> Role:
    found = next((r for r in STUDIED if r.key == key), None)
    if found is None:
        raise StudyFormatError(f"{where}: {key!r} is not a model the study explains "
                               f"({', '.join(r.key for r in STUDIED)})")
    return found


def _by_role(block: Any, parse: Callable[[Any, str], T], where: str, optional: bool = False) -> dict[Role, T] | None:
    """``{role key: value}`` read into ``{Role: parse(value)}`` (an optional one may be absent: None)."""
    if block is None and optional:
        return None
    if not isinstance(block, dict):
        raise StudyFormatError(f"{where}: expected an object, found {type(block).__name__}")
    return {_studied(k, where): _read(parse, v, f"{where}.{k}") for k, v in block.items()}


def _keyed(by_role: Mapping[Role, Any], value: Callable[[Any], Any] = lambda v: v) -> dict[str, Any]:
    return {r.key: value(v) for r, v in by_role.items()}
