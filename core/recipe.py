"""The training recipe: every setting (`TrainConfig`), its stages (`Stage`, `default_stages`), what a resumed
run must share with the run it continues (`stage_settings`) and the teacher's input-size schedule.

`core.train` runs it; the command line, `core.reproduce` and the app's Train page build it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from core.catalog import VAL_CARVES, DatasetError, get_info
from core.distill import LOSSES, build_loss
from core.metadata import SEED_RANGE
from core.models import STUDENT_POOLED_BLOCKS, TEACHERS, smallest_side_needed
from core.roles import DISTILLED, LABEL_ONLY, SMOOTHING, TEACHER, Role

__all__ = ["TrainConfig", "SettingError", "INPUT_SIZE_RANGE", "Stage", "SCHEDULES", "default_stages", "RESUME_KEYS",
           "STUDENT_ONLY_KEYS", "stage_settings", "epoch_size"]

# The input sides a run may use. Below 16 px the models' pooling leaves nothing to classify; above 1024 px the
# decoded copy of a split and a student's fixed views (3 MiB per image and view at 1024 px) outgrow a machine's
# memory before the first epoch, and so does one batch of the teacher's activations.
INPUT_SIZE_RANGE = (16, 1024)


class SettingError(ValueError):
    """A setting no run can use: ``setting`` names it (a `TrainConfig` field, or a loss argument such as
    ``alpha``), ``reason`` says what is wrong, so that a front end can name the setting its own way."""

    def __init__(self, setting: str, reason: str):
        super().__init__(f"{setting}: {reason}")
        self.setting, self.reason = setting, reason


@dataclass
class TrainConfig:
    """Every setting of the recipe. Teacher and students share the data, input size and optimiser."""

    dataset: str = "phantom"
    root: str | None = None
    protocol: str = "official"
    data_seed: int = 0  # validation carve (and the phantom generator): fixed across seeds for a fair comparison
    val_fraction: float = 0.15
    val_carve: str = "random"  # or "scan_ends": the outer slices of each scan (`core.catalog.scan_end_split`)
    input_size: int | None = None  # None: the dataset's default
    max_per_class: int | None = None  # cap on training and validation images per class
    augment: bool = True
    views: int = 4  # fixed augmented views per training image that both student arms draw from
    class_balance: bool = False  # sample training images with weights 1 / class count
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # learning rate: "cosine" decay per epoch, or "onecycle" per step
    teacher_arch: str = "densenet121"
    teacher_epochs: int = 8
    # None: no early stopping for the teacher. With cosine decay the late, low-rate epochs are where a
    # from-scratch DenseNet gains most, while early validation loss is noisy; the best weights are kept anyway.
    teacher_patience: int | None = None
    teacher_label_smoothing: float = 0.0
    progressive: bool = False  # teacher epochs grow from half the input size to the full one
    depth: int = 5  # student conv blocks
    pooled_blocks: int = STUDENT_POOLED_BLOCKS  # of them, how many end in pooling (fewer: finer maps)
    student_epochs: int = 12
    patience: int = 4  # students' early-stopping patience in epochs (none under the one-cycle schedule)
    loss: str = "kd"  # a core.distill.LOSSES name for the distilled student
    loss_args: dict[str, Any] = field(default_factory=lambda: {"alpha": 0.5, "temperature": 4.0})
    attention_beta: float = 0.0  # > 0 adds attention transfer (needs the teacher on the fly)
    label_only: bool = True  # also train the label-only student (the baseline)
    # > 0 also trains a student on smoothed labels alone: is KD's gain from the teacher or only from softer targets?
    smoothing_control: float = 0.0
    seeds: tuple[int, ...] = (0,)
    resume: bool = True  # continue interrupted stages; reuse finished ones
    time_cap_s: float | None = None  # per stage
    threads: int | None = None
    teacher_logits: str | None = None  # cache file: computed once, reused by every student run

    def __post_init__(self):
        self.seeds = tuple(int(s) for s in self.seeds)
        self.validate()

    def validate(self) -> None:
        """Refuse, with a `SettingError` naming it, a setting no run can use: found here, before anything is
        trained or written, not after the teacher has trained for an hour."""
        try:  # a built-in dataset, or the user's folder of that name under the data root
            info = get_info(self.dataset, self.root)
        except DatasetError as err:
            raise SettingError("dataset", str(err)) from None
        if info.synthetic and self.val_carve != "random":
            raise SettingError("val_carve", f"the {self.dataset} dataset's images are not slices of scans; use random")
        for name, what, known in (("teacher_arch", "teacher", TEACHERS),
                                  ("schedule", "schedule", SCHEDULES), ("loss", "loss", LOSSES),
                                  ("val_carve", "validation carve", VAL_CARVES)):
            if getattr(self, name) not in known:
                raise SettingError(name, f"unknown {what} {getattr(self, name)!r}; choose one of {', '.join(known)}")
        for name in ("batch_size", "teacher_epochs", "student_epochs", "patience", "views"):
            _whole(name, getattr(self, name), 1)
        for name in ("max_per_class", "teacher_patience", "threads"):  # None: no cap, no early stop, torch's threads
            if getattr(self, name) is not None:
                _whole(name, getattr(self, name), 1)
        _whole("pooled_blocks", self.pooled_blocks, 0)
        _whole("data_seed", self.data_seed, *SEED_RANGE)
        for seed in self.seeds:  # numpy's seeding takes no more than 32 bits: a larger seed failed its stage
            _whole("seeds", seed, *SEED_RANGE)
        if len(set(self.seeds)) < len(self.seeds):
            raise SettingError("seeds", f"must differ (one run folder per seed), got {list(self.seeds)}")
        _real("lr", self.lr, 0, open_low=True)
        _real("weight_decay", self.weight_decay, 0)
        _real("val_fraction", self.val_fraction, 0, 1, open_low=True, open_high=True)
        _real("attention_beta", self.attention_beta, 0)
        _real("smoothing_control", self.smoothing_control, 0, 1, open_high=True)
        if self.time_cap_s is not None:
            _real("time_cap_s", self.time_cap_s, 0, open_low=True)
        self._check_losses()
        self._check_models()

    def _check_losses(self) -> None:
        """Every loss a stage builds, built now: an unknown loss or argument, or one out of its range, fails here."""
        for name, value in self.loss_args.items():
            if isinstance(value, numbers.Real) and not math.isfinite(value):
                raise SettingError(name, f"must be a finite number, got {value}")
        try:
            self.teacher_loss_spec()
        except ValueError as err:
            raise SettingError("teacher_label_smoothing", str(err)) from None
        try:
            self.loss_spec()
        except ValueError as err:  # the loss's own checks name the argument first ("alpha must be in [0, 1]")
            named = next((name for name in self.loss_args if str(err).startswith(f"{name} ")), None)
            raise SettingError(named or "loss_args", str(err)[len(named or ""):].lstrip()) from None

    def _check_models(self) -> None:
        """The input size in `INPUT_SIZE_RANGE`, and both models able to classify images of that size."""
        size = self.input_size if self.input_size is not None else get_info(self.dataset, self.root).input_size
        _whole("input_size", size, *INPUT_SIZE_RANGE)
        try:
            student = smallest_side_needed("student", size, depth=self.depth, pooled=self.pooled_blocks)
        except ValueError as err:  # the student's constructor refuses a depth it has no widths for
            raise SettingError("depth", str(err)) from None
        for smallest, model in ((smallest_side_needed(self.teacher_arch, size), f"the {self.teacher_arch} teacher"),
                                (student, "the student")):
            if smallest is not None:
                raise SettingError("input_size", f"{size} px is too small for {model} (its pooling leaves no pixel "
                                                 f"to classify); use at least {smallest}")

    def loss_spec(self, loss: str | None = None, loss_args: dict | None = None) -> dict[str, dict]:
        """The `core.distill.build_loss` spec of a student (attention transfer added when beta > 0)."""
        loss = loss or self.loss
        spec = {loss: dict(self.loss_args if loss_args is None else loss_args)}
        if self.attention_beta > 0:
            spec["attention"] = {"beta": self.attention_beta}
        build_loss(spec)
        return spec

    def teacher_loss_spec(self) -> dict[str, dict]:
        spec = {"label_smoothing": {"smoothing": self.teacher_label_smoothing}} if self.teacher_label_smoothing \
            else {"label_only": {}}
        build_loss(spec)
        return spec


SCHEDULES = ("cosine", "onecycle")


def _whole(name: str, value, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SettingError(name, f"must be a whole number, got {value!r}")
    if value < low or (high is not None and value > high):
        raise SettingError(name, f"must be {f'at least {low}' if high is None else f'between {low} and {high}'}, "
                                 f"got {value}")


def _real(name: str, value, low: float, high: float | None = None, open_low: bool = False,
          open_high: bool = False) -> None:
    """A finite number from ``low`` to ``high``, either end left out when open (nan and inf are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or \
            value < low or (open_low and value == low) or \
            (high is not None and (value > high or (open_high and value == high))):
        above = f"above {low:g}" if open_low else f"at least {low:g}"
        below = "" if high is None else f" and {'below' if open_high else 'at most'} {high:g}"
        raise SettingError(name, f"must be a finite number {above}{below}, got {value!r}")


@dataclass(frozen=True)
class Stage:
    """One run of the recipe: which model, which seed, which loss, how long."""

    name: str  # its run folder
    role: str  # "teacher" or "student"
    seed: int = 0
    loss: str = "label_only"
    loss_args: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None  # None: the config's epochs for the role
    model: str = ""  # the `core.roles` key of the model it trains ("" for a stage outside the table, a KD-grid run)

    @classmethod
    def of(cls, model: Role, seed: int = 0, loss: str = "label_only", loss_args: dict[str, Any] | None = None,
           epochs: int | None = None) -> Stage:
        """The stage that trains one role's model: named, and of the architecture family, the table gives."""
        return cls(model.stage(seed), model.kind, seed, loss, dict(loss_args or {}), epochs, model.key)


def default_stages(cfg: TrainConfig, teacher: bool = True) -> list[Stage]:
    """Teacher, then per seed the distilled student (``student_s<seed>``), the label-only one
    (``label_only_s<seed>``) and, if asked, the label-smoothing control (``smoothing_s<seed>``)."""
    stages = [Stage.of(TEACHER)] if teacher else []
    for seed in cfg.seeds:
        stages.append(Stage.of(DISTILLED, seed, cfg.loss, cfg.loss_args))
        if cfg.label_only:
            stages.append(Stage.of(LABEL_ONLY, seed))
        if cfg.smoothing_control:
            stages.append(Stage.of(SMOOTHING, seed, "label_smoothing", {"smoothing": cfg.smoothing_control}))
    return stages


# Settings a resumed run must share with the run that wrote its state: resuming with any other value would
# write metadata describing a run that never happened.
RESUME_KEYS = ("dataset", "protocol", "data_seed", "val_fraction", "val_carve", "input_size", "max_per_class",
               "augment", "views", "class_balance", "batch_size", "lr", "weight_decay", "schedule", "teacher_arch",
               "teacher_label_smoothing", "progressive", "depth", "attention_beta", "pooled_blocks")
# Settings of the student alone: a teacher's run does not depend on them, so a teacher kept from one recipe
# serves a recipe that differs only in its student.
STUDENT_ONLY_KEYS = ("depth", "attention_beta", "pooled_blocks")
# A setting added after runs were kept: those runs used the value it had before it could be chosen.
SETTINGS_BEFORE_RECORDED = {"pooled_blocks": STUDENT_POOLED_BLOCKS, "val_carve": "random"}


def recorded_settings(recorded: dict) -> dict:
    """Settings as a run recorded them, with those it predates (`SETTINGS_BEFORE_RECORDED`) filled in."""
    return {**SETTINGS_BEFORE_RECORDED, **recorded}


def stage_settings(cfg: TrainConfig, stage: Stage) -> dict:
    """What defines one stage's run: resuming it is allowed only with exactly these values."""
    epochs = int(stage.epochs or (cfg.student_epochs if stage.role == "student" else cfg.teacher_epochs))
    keys = [k for k in RESUME_KEYS if stage.role == "student" or k not in STUDENT_ONLY_KEYS]
    return {**{k: getattr(cfg, k) for k in keys}, "input_size": cfg.input_size or
            get_info(cfg.dataset, cfg.root).input_size, "epochs": epochs, "seed": stage.seed, "role": stage.role,
            "loss": stage.loss, "loss_args": dict(stage.loss_args)}


def epoch_size(final: int, epoch: int, epochs: int, progressive: bool) -> int:
    """Input side of one epoch (0-based): with progressive resizing it grows from half the final side to
    the full one over the first 60% of the epochs (in steps of 16 px) and stays there; else the final side.

    Both model families pool globally before their head, so one model runs at every size.
    """
    if not progressive or epochs <= 1:
        return final
    frac = min(1.0, epoch / max(0.6 * (epochs - 1), 1e-9))
    return int(min(final, max(32, round(final * (0.5 + 0.5 * frac) / 16) * 16)))
