"""The record of ``results.json``: every number `core.reproduce` measured for one dataset and split.

`core.reproduce` builds a `ShippedResults` and writes ``to_json()``; `core.results` (the README and docs) and the
app read a file with `ShippedResults.read` and use its attributes and accessors, never its keys. The file keeps
the shape it had before the record, plus ``"version"``: a file without one is version 1 and is read as it is
(older files lack the fields added since: the label-smoothing control, the paired differences, the fingerprints,
``training_seconds``). A newer version or a malformed field is refused with `ResultsFileError`, naming the file
and the field.

The per-model reports of the test evaluation stay the evaluation's own output (`core.evaluate`), reached through
`Evaluation.report` by role and seed. The faithfulness study is kept as its raw JSON and read with `study()`, which
the study's own record parses (a file may hold the study alone: `core.faithfulness_study` writes one where no
reproduce ran, and reads it back itself). Nothing here imports the training code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from core.budgets import Budget
from core.roles import CONTROLS, DISTILLED, STUDENTS, TEACHER, Role
from core.study_record import FaithfulnessStudy

VERSION = 1
# The metrics summarised over seeds for each student (agreement with the teacher comes from the pair reports).
SUMMARY_METRICS = ("accuracy", "macro_f1", "ece", "balanced_accuracy")
# The metrics the distilled student is compared on with each control, paired by seed.
PAIRED_METRICS = ("accuracy", "balanced_accuracy")


class ResultsFileError(ValueError):
    """A results file this code cannot read: a newer version, or a field missing or of the wrong kind."""


@dataclass(frozen=True)
class Spread:
    """One metric over seeds (`core.metrics.mean_and_spread`): mean, sample std, min, max and the seeds' count."""

    mean: float
    std: float
    min: float
    max: float
    n: int


@dataclass(frozen=True)
class ArmSummary:
    """A student's test metrics over seeds; ``balanced_accuracy`` is None in files written before it was."""

    accuracy: Spread
    macro_f1: Spread
    ece: Spread
    agreement: Spread
    balanced_accuracy: Spread | None = None


@dataclass(frozen=True)
class PairedDifference:
    """The distilled student minus a control on one metric, paired by seed (`core.stats.paired_difference`)."""

    mean: float
    std: float
    ci: tuple[float, float]
    p_value: float
    p_sign_flip: float
    n: int
    test: str
    differences: tuple[float, ...]


@dataclass(frozen=True)
class GridRow:
    """One KD setting of the grid with its validation accuracy (at its lowest validation loss) and that loss."""

    alpha: float
    temperature: float
    val_acc: float
    val_loss: float


@dataclass(frozen=True)
class KdSetting:
    """The KD setting chosen on validation (or given), which every distilled seed is trained with."""

    alpha: float
    temperature: float

    def loss_args(self) -> dict:
        return {"alpha": self.alpha, "temperature": self.temperature}


@dataclass(frozen=True)
class Evaluation:
    """`core.evaluate.evaluate_checkpoints`'s output: a report per model and per teacher-student pair, each as
    the evaluation wrote it, named by stage (``teacher``, ``student_s0``, ``label_only_s3``)."""

    models: dict[str, dict]
    pairs: dict[str, dict]
    split: str | None = None  # None for the second report of the same predictions (near-duplicates left out)

    def report(self, role: Role, seed: int | None = None) -> dict:
        """The test report of a role's model (a student's of one seed)."""
        return self.models[role.stage(seed)]

    def agreement(self, role: Role, seed: int) -> float:
        """How often a student's prediction of one seed agrees with the teacher's."""
        return self.pairs[role.stage(seed)]["agreement"]

    def to_json(self) -> dict:
        return {"models": self.models, "pairs": self.pairs} | ({"split": self.split} if self.split else {})


@dataclass(frozen=True)
class ShippedResults:
    """Every number of one `core.reproduce` run of a dataset and split (see the module's docstring).

    Attributes:
        summary: per student role's key (``student``, ``label_only``, ``smoothing``), its metrics over seeds;
            read with `arm_summary`.
        paired: per control role's key, per metric, the distilled student minus that control; read with
            `paired_difference`.
        recipe: the training config every stage used (``TrainConfig`` without machine-local paths).
        seconds: this run's wall time; ``training_seconds``: every stage's own, kept stages included.
        faithfulness: the study `core.faithfulness_study` stored in the same file, as its raw JSON; read with
            `study`.
        source: the file it was read from, named when its study cannot be read (not part of the file, nor of
            the record's equality).
    """

    dataset: str
    protocol: str
    budget: Budget
    chosen: KdSetting
    grid: tuple[GridRow, ...]
    seeds: tuple[int, ...]
    test: Evaluation
    summary: dict[str, ArmSummary]
    versions: dict[str, str]
    created: str
    seconds: float
    test_without_near_duplicates: Evaluation | None = None
    paired: dict[str, dict[str, PairedDifference]] | None = None
    test_fingerprint: str | None = None
    teacher_sha256: str | None = None
    recipe: dict | None = None
    training_seconds: float | None = None
    faithfulness: dict | None = None
    source: str = field(default="results.json", compare=False, repr=False)

    def study(self) -> FaithfulnessStudy | None:
        """The faithfulness study stored in this file, or None if there is none (`StudyFormatError`, naming the
        file, for one that cannot be read). An empty block is no study, as the pages have always read it."""
        return FaithfulnessStudy.from_json(self.faithfulness, self.source) if self.faithfulness else None

    def arm_summary(self, role: Role) -> ArmSummary | None:
        """A student's metrics over seeds; None for a control this file did not train."""
        return self.summary.get(role.key)

    @property
    def arms(self) -> tuple[Role, ...]:
        """The students this file summarises, in the roles table's order."""
        return tuple(r for r in STUDENTS if r.key in self.summary)

    def paired_difference(self, control: Role, metric: str = "accuracy") -> PairedDifference | None:
        """The distilled student minus ``control`` on ``metric``, paired by seed; None where not recorded."""
        return ((self.paired or {}).get(control.key) or {}).get(metric)

    def accuracy(self, role: Role) -> float:
        """Test accuracy of the teacher, or a student's mean over seeds."""
        if role == TEACHER:
            return self.test.report(TEACHER)["accuracy"]
        return self.summary[role.key].accuracy.mean

    def to_json(self) -> dict:
        """The file's content, in the shape it always had, with ``"version"``."""
        out = {"version": VERSION, "dataset": self.dataset, "protocol": self.protocol, "budget": asdict(self.budget),
               "chosen": asdict(self.chosen), "grid": [asdict(row) for row in self.grid], "seeds": list(self.seeds),
               "test": self.test.to_json(),
               "test_without_near_duplicates": self.test_without_near_duplicates and
               self.test_without_near_duplicates.to_json(),
               "summary": {key: _arm_json(arm) for key, arm in self.summary.items()}}
        if self.paired is not None:
            out["paired"] = {_paired_key(key): {metric: asdict(d) for metric, d in by_metric.items()}
                             for key, by_metric in self.paired.items()}
        out |= {k: v for k, v in (("test_fingerprint", self.test_fingerprint),
                                  ("teacher_sha256", self.teacher_sha256), ("recipe", self.recipe)) if v is not None}
        out["seconds"] = self.seconds
        if self.training_seconds is not None:
            out["training_seconds"] = self.training_seconds
        out |= {"versions": self.versions, "created": self.created}
        if self.faithfulness is not None:
            out["faithfulness"] = self.faithfulness
        return out

    def json_text(self) -> str:
        """The file's text, as `core.reproduce` writes it."""
        return json.dumps(self.to_json(), indent=1)

    @classmethod
    def from_json(cls, data: Any, source: str | Path = "results.json") -> ShippedResults:
        """The record of a file's parsed JSON; ``source`` names the file in a refusal (`ResultsFileError`)."""
        read = _Reader(data, str(source))
        version = read.optional("version", int)
        version = 1 if version is None else version
        if version != VERSION:
            raise ResultsFileError(f"{source}: version {version} of results.json; this code reads version {VERSION}"
                                   " (update the code, or rerun python -m core.reproduce)")
        return cls(
            dataset=read.field("dataset", str), protocol=read.field("protocol", str),
            budget=read.record("budget", Budget), chosen=read.record("chosen", KdSetting),
            grid=tuple(read.record(f"grid[{i}]", GridRow, row) for i, row in enumerate(read.field("grid", list))),
            seeds=tuple(read.field("seeds", list)), test=read.evaluation("test"),
            summary={key: read.arm(f"summary.{key}", arm) for key, arm in read.field("summary", dict).items()},
            versions=read.field("versions", dict), created=read.field("created", str),
            seconds=float(read.field("seconds", (int, float))),
            test_without_near_duplicates=read.evaluation("test_without_near_duplicates", optional=True),
            paired=read.paired(), test_fingerprint=read.optional("test_fingerprint", str),
            teacher_sha256=read.optional("teacher_sha256", str), recipe=read.optional("recipe", dict),
            training_seconds=read.optional("training_seconds", (int, float)),
            faithfulness=read.optional("faithfulness", dict), source=str(source))

    @classmethod
    def read(cls, path: str | Path) -> ShippedResults:
        """The record of a results file on disk (`ResultsFileError` for one that is not valid JSON either)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except ValueError as err:
            raise ResultsFileError(f"{path}: not JSON ({err})") from None
        return cls.from_json(data, path)


# The JSON key of each control's paired comparison, looked up (never split back into names).
PAIRED_KEYS = {f"{DISTILLED.key}_minus_{r.key}": r.key for r in CONTROLS}


def _paired_key(control_key: str) -> str:
    return next(json_key for json_key, key in PAIRED_KEYS.items() if key == control_key)


def _arm_json(arm: ArmSummary) -> dict:
    return {f.name: asdict(getattr(arm, f.name)) for f in fields(arm) if getattr(arm, f.name) is not None}


class _Reader:
    """Reads one results file's fields, refusing a missing or mistyped one by the file's and the field's name."""

    def __init__(self, data: Any, source: str):
        if not isinstance(data, dict):
            raise ResultsFileError(f"{source}: not a results file (a JSON object is expected)")
        self.data, self.source = data, source

    def refuse(self, name: str, problem: str) -> ResultsFileError:
        return ResultsFileError(f"{self.source}: field {name!r} {problem}")

    def field(self, name: str, kind, value: Any = None) -> Any:
        value = self.data.get(name) if value is None else value
        if value is None:
            raise self.refuse(name, "is missing")
        if not isinstance(value, kind) or isinstance(value, bool) and kind in (int, float, (int, float)):
            raise self.refuse(name, f"is {type(value).__name__}, not {_kind_name(kind)}")
        return value

    def optional(self, name: str, kind) -> Any:
        return None if self.data.get(name) is None else self.field(name, kind)

    def record(self, name: str, cls, value: Any = None):
        """A flat record (`Budget`, `KdSetting`, `GridRow`, `Spread`) from its JSON object."""
        value = self.field(name, dict, value)
        try:
            return cls(**value)
        except TypeError as err:
            raise self.refuse(name, f"does not fit {cls.__name__} ({err})") from None

    def evaluation(self, name: str, optional: bool = False) -> Evaluation | None:
        value = self.data.get(name) if optional else self.field(name, dict)
        if value is None:
            return None
        value = self.field(name, dict, value)
        models, pairs = (self.field(f"{name}.{k}", dict, value.get(k)) for k in ("models", "pairs"))
        return Evaluation(models, pairs, value.get("split"))

    def arm(self, name: str, value: Any) -> ArmSummary:
        value = self.field(name, dict, value)
        spreads = {k: self.record(f"{name}.{k}", Spread, v) for k, v in value.items()}
        try:
            return ArmSummary(**spreads)
        except TypeError as err:
            raise self.refuse(name, f"does not fit ArmSummary ({err})") from None

    def paired(self) -> dict[str, dict[str, PairedDifference]] | None:
        value = self.optional("paired", dict)
        if value is None:
            return None
        unknown = sorted(set(value) - set(PAIRED_KEYS))
        if unknown:
            raise self.refuse(f"paired.{unknown[0]}", f"is no comparison of this code ({', '.join(PAIRED_KEYS)})")
        return {PAIRED_KEYS[json_key]: {metric: self.difference(f"paired.{json_key}.{metric}", d)
                                        for metric, d in self.field(f"paired.{json_key}", dict, by_metric).items()}
                for json_key, by_metric in value.items()}

    def difference(self, name: str, value: Any) -> PairedDifference:
        d = self.record(name, _PairedJson, value)
        return PairedDifference(mean=d.mean, std=d.std, ci=tuple(d.ci), p_value=d.p_value,
                                p_sign_flip=d.p_sign_flip, n=d.n, test=d.test, differences=tuple(d.differences))


@dataclass(frozen=True)
class _PairedJson:
    """A paired difference as JSON holds it (lists), checked for its fields before it becomes the record."""

    mean: float
    std: float
    ci: list
    p_value: float
    p_sign_flip: float
    n: int
    test: str
    differences: list


def _kind_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({"dict": "an object", "list": "a list", "str": "a string"}.get(k.__name__, k.__name__)
                       for k in kinds)
