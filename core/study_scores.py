"""The scores the faithfulness study records, each a small record read from and written to its JSON: the
per-image `Distribution`, the paired `Comparison` with a random map, a map set's `CurveScores` on one model (by
`METRICS`), teacher-student `Agreement`, `Localisation` on lesion masks, and the randomisation cascade's
`CascadeStep` beside what `Unrelated` image pairs score. `core.study_record` assembles them into the study. A block
that lacks a field or holds the wrong kind of value is refused with a `StudyFormatError` naming the file and the
field. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from core.stats import paired_difference

T = TypeVar("T")


def matched_side(name: str) -> int | None:
    """The side a random map drawn at a map's own side says in its name (``random_4``: 4); None for any other map."""
    side = name.removeprefix("random_")
    return int(side) if name.startswith("random_") and side.isdigit() else None

CURVE_METRICS = ("deletion_auc", "insertion_auc")  # what every version holds


@dataclass(frozen=True)
class ScoreMetric:
    """One way of removing pixels in a map's order and reading the score: its direction and its family."""

    label: str
    better: str  # "lower" or "higher"
    family: str  # "pixels" (per pixel, version 1), "patches" (whole cells of a grid), "road" (imputed)
    verdict: bool  # counted in the verdict word (`CurveScores.verdict`)


# Every score a map can have on a model, in the order tables show them. The verdict counts the removals that treat
# a coarse map fairly (whole patches, and ROAD's imputation, which leaves no holes for the model to see); per-pixel
# deletion to the mean colour rewards scattered maps, so it is shown but not counted.
METRICS: dict[str, ScoreMetric] = {
    "deletion_auc": ScoreMetric("Deletion AUC, pixels to the mean colour", "lower", "pixels", False),
    "insertion_auc": ScoreMetric("Insertion AUC, pixels from a blurred image", "higher", "pixels", False),
    "patch_deletion_mean": ScoreMetric("Deletion AUC, patches to the mean colour", "lower", "patches", True),
    "patch_deletion_blur": ScoreMetric("Deletion AUC, patches to a blurred image", "lower", "patches", True),
    "patch_insertion_mean": ScoreMetric("Insertion AUC, patches from the mean colour", "higher", "patches", True),
    "patch_insertion_blur": ScoreMetric("Insertion AUC, patches from a blurred image", "higher", "patches", True),
    "road_morf": ScoreMetric("ROAD, most relevant removed first", "lower", "road", True),
    "road_lerf": ScoreMetric("ROAD, least relevant removed first", "higher", "road", True),
    "road_combined": ScoreMetric("ROAD combined ((LeRF - MoRF) / 2)", "higher", "road", False),
}


class StudyFormatError(ValueError):
    """A study block that cannot be read; the message names its file and field."""


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
        values = tuple(None if v is None else float(v) for v in required(block, "values", where))
        stats = {k: float(block[k]) for k in ("mean", "median", "q25", "q75") if block.get(k) is not None}
        return cls(int(required(block, "n", where)), values, **stats)


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

    @classmethod
    def paired(cls, a, b) -> Comparison:
        """``a - b`` image by image over the images where both scores are finite."""
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        ok = np.isfinite(a) & np.isfinite(b)
        out = paired_difference(a[ok], b[ok], unit="images")
        return cls(out["mean"], out["n"], out["test"], out["std"], tuple(out["ci"]), out["p_value"],
                   out["p_sign_flip"])

    def to_json(self) -> dict:
        return {"mean": self.mean, "n": self.n, "test": self.test, "std": self.std, "ci": list(self.ci),
                "p_value": self.p_value, "p_sign_flip": self.p_sign_flip}

    @classmethod
    def from_json(cls, block: Any, where: str) -> Comparison:
        lo, hi = required(block, "ci", where)
        number = lambda name: float(required(block, name, where))  # noqa: E731
        return cls(number("mean"), int(required(block, "n", where)), str(required(block, "test", where)), number("std"),
                   (float(lo), float(hi)), number("p_value"), number("p_sign_flip"))


@dataclass(frozen=True)
class CurveScores:
    """One map set's scores on one model's probability (`METRICS` by name: version 1 holds the per-pixel deletion and
    insertion AUCs only), each against the random map it is compared with on the same images (``vs_random`` by
    metric; empty for a random map itself)."""

    scores: Mapping[str, Distribution]
    vs_random: Mapping[str, Comparison]

    @property
    def deletion_auc(self) -> Distribution:
        return self.scores["deletion_auc"]

    @property
    def insertion_auc(self) -> Distribution:
        return self.scores["insertion_auc"]

    def verdict(self) -> str:
        """The word a table gives this map against its random map, from the removals the verdict counts: "better"
        or "worse" only where every one of them says so (paired 95% intervals), "depends on how pixels are
        removed" where some say better and some worse, else "not shown"; "" without such scores (version 1)."""
        said = [c.verdict(METRICS[m].better) for m, c in self.vs_random.items() if METRICS[m].verdict]
        if not said:
            return ""
        if all(v == "yes" for v in said):
            return "better"
        if all(v == "no: worse" for v in said):
            return "worse"
        if "yes" in said and "no: worse" in said:
            return "depends on how pixels are removed"
        return "not shown"

    def to_json(self) -> dict:
        out = {m: d.to_json() for m, d in self.scores.items()}
        if self.vs_random:
            out["vs_random"] = {metric: c.to_json() for metric, c in self.vs_random.items()}
        return out

    @classmethod
    def from_json(cls, block: Any, where: str) -> CurveScores:
        unknown = set(block) - set(METRICS) - {"vs_random"}
        if unknown:
            raise StudyFormatError(f"{where}: unknown score(s) {', '.join(sorted(unknown))}")
        for m in CURVE_METRICS:
            required(block, m, where)
        scores = {m: distribution_at(block, m, where) for m in METRICS if m in block}
        versus = block.get("vs_random") or {}
        return cls(scores, {m: parsed(Comparison.from_json, required(versus, m, f"{where}.vs_random"),
                                     f"{where}.vs_random.{m}") for m in METRICS if m in versus})


@dataclass(frozen=True)
class Agreement:
    """Teacher-student agreement of the two maps of each image: rank correlation and top-10 % IoU."""

    spearman: Distribution
    iou: Distribution

    def to_json(self) -> dict:
        return {"spearman": self.spearman.to_json(), "iou": self.iou.to_json()}

    @classmethod
    def from_json(cls, block: Any, where: str) -> Agreement:
        return cls(distribution_at(block, "spearman", where), distribution_at(block, "iou", where))


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
        return cls(*(distribution_at(block, k, where) for k in ("hit", "energy", "iou")))


@dataclass(frozen=True)
class CascadeStep:
    """One step of the model-randomisation cascade: the layers re-initialised so far (top first, this one last) and
    how the map then compares with the trained model's map."""

    layer: str
    spearman: Distribution
    iou: Distribution
    abs_spearman: Distribution | None = None  # version 2 on: |rank correlation| (a map that inverts is not new)
    ssim: Distribution | None = None  # structural similarity of the two maps
    constant: int | None = None  # how many images' maps turned constant (they explain nothing; no rank to compare)

    @property
    def median_correlation(self) -> float | None:
        """The cascade's statistic, drawn per step on the page and given at the last step in the results: the
        median rank correlation with the trained map (None: no image kept a non-constant map)."""
        return self.spearman.median

    def to_json(self) -> dict:
        out = {"layer": self.layer, "spearman": self.spearman.to_json(), "iou": self.iou.to_json()}
        for name in ("abs_spearman", "ssim"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name).to_json()
        if self.constant is not None:
            out["constant"] = self.constant
        return out

    @classmethod
    def from_json(cls, block: Any, where: str) -> CascadeStep:
        optional = {name: distribution_at(block, name, where) for name in ("abs_spearman", "ssim") if name in block}
        constant = block.get("constant")
        return cls(str(required(block, "layer", where)), distribution_at(block, "spearman", where),
                   distribution_at(block, "iou", where), **optional,
                   constant=None if constant is None else int(constant))


@dataclass(frozen=True)
class Unrelated:
    """What "unrelated" looks like beside the cascade: the same similarity scores of two different images' maps
    from one model (pairs of different images, none randomised)."""

    spearman: Distribution
    abs_spearman: Distribution
    ssim: Distribution
    iou: Distribution

    def to_json(self) -> dict:
        return {k: getattr(self, k).to_json() for k in ("spearman", "abs_spearman", "ssim", "iou")}

    @classmethod
    def from_json(cls, block: Any, where: str) -> Unrelated:
        return cls(*(distribution_at(block, k, where) for k in ("spearman", "abs_spearman", "ssim", "iou")))


def required(block: Any, name: str, where: str) -> Any:
    if not isinstance(block, dict):
        raise StudyFormatError(f"{where}: expected an object, found {type(block).__name__}")
    if name not in block:
        raise StudyFormatError(f"{where}: no {name!r}")
    return block[name]


def distribution_at(block: Any, name: str, where: str) -> Distribution:
    return parsed(Distribution.from_json, required(block, name, where), f"{where}.{name}")


def parsed(parse: Callable[..., T], block: Any, where: str, *more: Any) -> T:
    """``parse(block, where, *more)``, a value of the wrong kind refused as a `StudyFormatError` naming ``where``."""
    try:
        return parse(block, where, *more)
    except StudyFormatError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise StudyFormatError(f"{where}: {type(e).__name__}: {e}") from e
