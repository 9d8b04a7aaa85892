"""The faithfulness study's answer in words: does a map explain a model's prediction better than a random map as
coarse as itself, and does the student's map explain the *teacher*? Written from the study's numbers only (the
Faithfulness page and docs/results.md say the same sentence), with a verdict word only where the ways of removing
pixels that the verdict counts (`core.study_scores.METRICS`) agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.roles import DISTILLED, TEACHER, Role
from core.study_record import FaithfulnessStudy
from core.study_scores import METRICS

# The maps the answer is about: the student's one-pass maps on the teacher's score, and the teacher's own Grad-CAM
# as the reference a faster map has to match.
ASKED = (("feature_maps", DISTILLED, "the student's average feature maps"), ("cam", DISTILLED, "the student's CAM"),
         ("grad_cam", TEACHER, "the teacher's own Grad-CAM"))


@dataclass(frozen=True)
class MapVerdict:
    """How one map set fares on one model's score against its random map, over the removals the verdict counts."""

    word: str  # `core.study_scores.CurveScores.verdict`
    better: int  # removals whose paired 95% interval says better
    worse: int  # ... says worse
    counted: int  # removals counted

    def phrase(self) -> str:
        """E.g. "better than a random map as coarse as itself in all 6 ways of removing pixels"."""
        random = "a random map as coarse as itself"
        if self.word in ("better", "worse"):
            return f"{self.word} than {random} in all {self.counted} ways of removing pixels"
        if self.word == "depends on how pixels are removed":
            return (f"better than {random} in {self.better} and worse in {self.worse} of {self.counted} ways of "
                    "removing pixels: it depends on how pixels are removed")
        neither = self.counted - self.better - self.worse
        return (f"against {random}, better in {self.better}, worse in {self.worse} and neither in {neither} of "
                f"{self.counted} ways of removing pixels: no verdict")


def map_verdict(study: FaithfulnessStudy, method: str, explainer: Role, scorer: Role) -> MapVerdict | None:
    """The verdict of ``explainer``'s ``method`` maps on ``scorer``'s score; None where the study has none (the
    method not studied, or a version 1 study without the removals the verdict counts)."""
    scores = study.score(method, explainer, scorer)
    if scores is None:
        return None
    said = [c.verdict(METRICS[m].better) for m, c in scores.vs_random.items() if METRICS[m].verdict]
    if not said:
        return None
    return MapVerdict(scores.verdict(), said.count("yes"), said.count("no: worse"), len(said))


def answer(study: FaithfulnessStudy) -> str:
    """One or two plain sentences: on the teacher's score, how the student's one-pass maps and the teacher's own
    Grad-CAM fare against random maps as coarse as themselves."""
    found = [(label, v) for method, role, label in ASKED
             if (v := map_verdict(study, method, role, TEACHER)) is not None]
    dataset, n = study.config.dataset, study.images
    if not found:
        return (f"This {dataset} study (version {study.version}) scored the maps by deleting single pixels only, "
                "which favours scattered maps over coarse ones; it gives no verdict. Rerun "
                f"`python -m core.faithfulness_study {dataset}` for one.")
    parts = [f"{label} {v.phrase()}" for label, v in found]
    return (f"Does the student's map explain the teacher's prediction? On {n} {dataset} test images, scored on the "
            f"teacher's probability: " + "; ".join(parts) + ".")
