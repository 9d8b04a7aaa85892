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
from dataclasses import dataclass, field
from types import EllipsisType
from typing import Any, TypeVar

from core.roles import DISTILLED, STUDIED, TEACHER, Role
from core.study_scores import (Agreement, CascadeStep, CurveScores, Distribution, Localisation, StudyFormatError,
                               Unrelated, parsed, required)

STUDY_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: per-pixel deletion and insertion only, no ROAD, no matched random maps
T = TypeVar("T")


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
class MethodScores:
    """Everything the study measured of one explainer or baseline map.

    Attributes:
        images: how many study images it ran on (the slow methods: the seeded subset).
        baseline: a map made without a model (random, centre, mask prior): one map whichever model it is said to
            explain, so it has no cross-model pairs, no agreement and no times.
        curves: its deletion/insertion scores by the pair scored.
        agreement, seconds, localisation: None where not measured (a baseline; a study of one model's maps;
            a dataset without lesion masks). A map read off the student's evidence head has its agreement with
            the teacher's Grad-CAM of the same image, the map it learnt to give. ``seconds`` and ``localisation`` are by the model whose map it is.
        versus: by the model whose map it is, the random map its scores on that model's maps are compared with:
            one drawn at the map's own side (``random_4`` for a 4 x 4 map) or per pixel (``random``, version 1).
        map_side: by model, the side of the grid the map is drawn at (`core.explainer.Explainer.map_side`).
    """

    images: int
    baseline: bool
    curves: Mapping[Pair, CurveScores]
    agreement: Agreement | None = None
    seconds: Mapping[Role, Distribution] | None = None
    localisation: Mapping[Role, Localisation] | None = None
    versus: Mapping[Role, str] | None = None
    map_side: Mapping[Role, int] | None = None

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
        if self.versus is not None:
            out["versus"] = _keyed(self.versus)
        if self.map_side is not None:
            out["map_side"] = _keyed(self.map_side)
        return out

    @classmethod
    def from_json(cls, block: Any, where: str) -> MethodScores:
        images, named = required(block, "images", where), {p.key: p for p in PAIRS}
        unknown = set(block) - set(named) - {"images", "baseline", "agreement", "seconds", "localisation", "versus",
                                             "map_side"}
        if unknown:
            raise StudyFormatError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        curves = {named[k]: parsed(CurveScores.from_json, v, f"{where}.{k}") for k, v in block.items() if k in named}
        agreement = block.get("agreement")
        return cls(int(images), bool(required(block, "baseline", where)), curves,
                   None if agreement is None else parsed(Agreement.from_json, agreement, f"{where}.agreement"),
                   _by_role(block.get("seconds"), Distribution.from_json, f"{where}.seconds", optional=True),
                   _by_role(block.get("localisation"), Localisation.from_json, f"{where}.localisation", optional=True),
                   _by_role(block.get("versus"), lambda v, _: str(v), f"{where}.versus", optional=True),
                   _by_role(block.get("map_side"), lambda v, _: int(v), f"{where}.map_side", optional=True))


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
    patches: int | None = None  # version 2: patches per side of the patch deletion/insertion grid
    road_fractions: tuple[float, ...] | None = None  # version 2: the shares ROAD removes

    def to_json(self) -> dict:
        out = {"dataset": self.dataset, "images": self.images, "slow_images": self.slow_images,
               "sanity_images": self.sanity_images, "methods": list(self.methods), "steps": self.steps,
               "seed": self.seed, "explained": [r.key for r in self.explained]}
        if self.patches is not None:
            out["patches"] = self.patches
        if self.road_fractions is not None:
            out["road_fractions"] = list(self.road_fractions)
        return out

    @classmethod
    def from_json(cls, block: Any, where: str) -> StudySettings:
        images = required(block, "images", where)
        explained = tuple(_studied(k, f"{where}.explained") for k in block.get("explained", [r.key for r in STUDIED]))
        return cls(str(required(block, "dataset", where)), None if images is None else int(images),
                   int(required(block, "slow_images", where)), int(required(block, "sanity_images", where)),
                   tuple(str(m) for m in required(block, "methods", where)), int(required(block, "steps", where)),
                   int(required(block, "seed", where)), explained,
                   None if block.get("patches") is None else int(block["patches"]),
                   None if block.get("road_fractions") is None else tuple(float(f) for f in block["road_fractions"]))


SCORING = ("probability of the scoring model's predicted class; maps explain the explaining model's predicted "
           "class; deletion to the mean colour, insertion from a blurred image")
SCORING_V2 = SCORING + ("; patches of a 16 x 16 grid removed to / inserted from the mean colour and a blurred image; "
                        "ROAD with noisy linear imputation; each map compared with a random map drawn at its own side")


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
    unrelated: Mapping[str, Mapping[Role, Unrelated]] = field(default_factory=dict)  # version 2: by cheap method
    evidence_head: str | None = None  # sha256 of the student's evidence head its maps were read off, if studied
    version: int = STUDY_VERSION  # as read (a study read from an older file writes back in its own version)

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

    def is_stale(self, digests: Mapping[Role, str | None], head_digest: str | None | EllipsisType = ...) -> bool:
        """True when the checkpoints shipped now (sha256 by model, None if missing) are not those it scored, or,
        given ``head_digest`` (the shipped evidence head's sha256, None if missing), the head it read maps off is
        not the shipped one (a study recorded before heads were is judged by its checkpoints alone)."""
        head_changed = head_digest is not ... and self.evidence_head is not None and head_digest != self.evidence_head
        return head_changed or any(digests.get(r) != sha for r, sha in self.checkpoints.items())

    def positions(self, values: tuple) -> tuple[int, ...]:
        """The study images (positions among `images`) a method's per-image ``values`` are of: all of them, or the
        slow methods' seeded subset."""
        return tuple(range(self.images)) if len(values) == self.images else self.slow_subset

    def to_json(self) -> dict:
        """The block written under ``"faithfulness"``: version 1's shape, with its version."""
        return {
            "version": self.version, "config": self.config.to_json(), "images": self.images,
            "slow_subset": list(self.slow_subset), "test_fingerprint": self.test_fingerprint,
            "test_index": list(self.test_index), "true_class": list(self.true_class),
            "predicted": _keyed(self.predicted, list), "agreement_of_predictions": self.agreement_of_predictions,
            "checkpoints": _keyed(self.checkpoints), "input_size": _keyed(self.input_size),
            "tolerance_px": self.tolerance_px, "methods": {name: m.to_json() for name, m in self.methods.items()},
            "sanity": {name: _keyed(by_role, lambda steps: [s.to_json() for s in steps])
                       for name, by_role in self.sanity.items()},
            "environment": dict(self.environment),
            "scores_from_earlier_study": [r.key for r in self.scores_from_earlier_study], "scoring": self.scoring,
            **({} if self.version < 2 else
               {"unrelated": {name: _keyed(by_role, Unrelated.to_json) for name, by_role in self.unrelated.items()}}),
            **({"evidence_head": self.evidence_head} if self.evidence_head is not None else {})}

    @classmethod
    def from_json(cls, block: Any, source: str = "results.json") -> FaithfulnessStudy:
        """Read a ``"faithfulness"`` block (``source``: the file it came from, named in any refusal)."""
        where = f"{source}: faithfulness"
        if not isinstance(block, dict):
            raise StudyFormatError(f"{where}: expected an object, found {type(block).__name__}")
        version = block.get("version", 1)
        if version not in READABLE_VERSIONS:
            raise StudyFormatError(f"{where}: version {version!r} is not one this code reads (versions "
                                   f"{', '.join(map(str, READABLE_VERSIONS))}); update the code, or rerun the study "
                                   "to write it anew")
        return parsed(_study_from_json, block, where, version)


def _study_from_json(block: dict, where: str, version: int) -> FaithfulnessStudy:
    def read(name: str, convert: Callable[[Any], T]) -> T:
        return parsed(lambda value, _: convert(value), required(block, name, where), f"{where}.{name}")

    ints = lambda values: tuple(int(v) for v in values)  # noqa: E731
    methods, sanity = read("methods", dict), read("sanity", dict)
    return FaithfulnessStudy(
        parsed(StudySettings.from_json, required(block, "config", where), f"{where}.config"),
        read("images", int), read("slow_subset", ints), read("test_fingerprint", str), read("test_index", ints),
        read("true_class", ints),
        _by_role(required(block, "predicted", where), lambda v, _: ints(v), f"{where}.predicted"),
        read("agreement_of_predictions", float),
        _by_role(required(block, "checkpoints", where), lambda v, _: str(v), f"{where}.checkpoints"),
        _by_role(required(block, "input_size", where), lambda v, _: int(v), f"{where}.input_size"),
        read("tolerance_px", lambda v: None if v is None else int(v)),
        {str(name): parsed(MethodScores.from_json, m, f"{where}.methods.{name}") for name, m in methods.items()},
        {str(name): _by_role(by_role, lambda steps, at: tuple(parsed(CascadeStep.from_json, s, f"{at}[{i}]")
                                                             for i, s in enumerate(steps)), f"{where}.sanity.{name}")
         for name, by_role in sanity.items()},
        read("environment", dict),
        tuple(_studied(k, f"{where}.scores_from_earlier_study") for k in block.get("scores_from_earlier_study", [])),
        str(block.get("scoring", SCORING)),
        {str(name): _by_role(by_role, Unrelated.from_json, f"{where}.unrelated.{name}")
         for name, by_role in read_optional(block, "unrelated", where).items()},
        _sha256_or_none(block.get("evidence_head"), f"{where}.evidence_head"), int(version))


def _sha256_or_none(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise StudyFormatError(f"{where}: expected a sha256 (64 hex digits) or null, found {value!r}")
    return value


def read_optional(block: dict, name: str, where: str) -> dict:
    """An optional object field (absent in version 1): ``{}`` when absent."""
    value = block.get(name, {})
    if not isinstance(value, dict):
        raise StudyFormatError(f"{where}.{name}: expected an object, found {type(value).__name__}")
    return value


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
    return {_studied(k, where): parsed(parse, v, f"{where}.{k}") for k, v in block.items()}


def _keyed(by_role: Mapping[Role, Any], value: Callable[[Any], Any] = lambda v: v) -> dict[str, Any]:
    return {r.key: value(v) for r, v in by_role.items()}
