"""The faithfulness study's answer in words: does a map explain a model's prediction better than a random map as
coarse as itself, and does the student's map explain the *teacher*? Written from the study's numbers only (the
Faithfulness page and docs/results.md say the same sentence), with a verdict word only where the ways of removing
pixels that the verdict counts (`core.study_scores.METRICS`) agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.roles import DISTILLED, TEACHER, Role
from core.study_record import FaithfulnessStudy
from core.study_scores import METRICS, Comparison

# The maps the answer is about: the student's one-pass maps on the teacher's score, and the teacher's own Grad-CAM
# as the reference a faster map has to match.
ASKED = (("feature_maps", DISTILLED, "the student's average feature maps"), ("cam", DISTILLED, "the student's CAM"),
         ("teacher_evidence", DISTILLED, "the teacher's evidence read off the student"),
         ("grad_cam", TEACHER, "the teacher's own Grad-CAM"))
# The one-pass map trained to give the teacher's evidence must match the teacher's own Grad-CAM on ROAD (both orders):
# a removal its training never saw (it learns the teacher's maps, not any removal's scores).
MATCHED = ("teacher_evidence", "grad_cam", "road_combined")


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
    said = (f"Does the student's map explain the teacher's prediction? On {n} {dataset} test images, scored on the "
            f"teacher's probability: " + "; ".join(parts) + ".")
    matched = evidence_versus_grad_cam(study)
    return said if matched is None else f"{said} {matched.sentence()}"


@dataclass(frozen=True)
class Matched:
    """The teacher's evidence read off the student against the teacher's own Grad-CAM, image by image, on the
    teacher's ROAD score (both orders combined)."""

    evidence: float  # mean score of the student's evidence maps
    grad_cam: float  # mean score of the teacher's Grad-CAM on the same images
    difference: Comparison  # evidence - grad_cam, paired over images

    def sentence(self) -> str:
        d = self.difference
        low, high = d.ci
        return (f"On ROAD (both orders), the teacher's evidence read off the student scores {self.evidence:.3f} and "
                f"the teacher's Grad-CAM {self.grad_cam:.3f}: a paired difference of {d.mean:+.3f} (95% interval "
                f"{low:+.3f} to {high:+.3f}, {d.n} images).")


def evidence_versus_grad_cam(study: FaithfulnessStudy) -> Matched | None:
    """`Matched`, or None where the study lacks either map set (no head shipped, or a version 1 study)."""
    evidence_method, reference_method, metric = MATCHED
    evidence, reference = (study.score(evidence_method, DISTILLED, TEACHER),
                           study.score(reference_method, TEACHER, TEACHER))
    if evidence is None or reference is None or metric not in evidence.scores or metric not in reference.scores:
        return None
    a, b = (np.array([np.nan if v is None else v for v in s.scores[metric].values], dtype=np.float64)
            for s in (evidence, reference))
    if a.shape != b.shape:  # both are cheap methods, scored on every study image
        return None
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 2:
        return None
    return Matched(float(a[ok].mean()), float(b[ok].mean()), Comparison.paired(a[ok], b[ok]))
