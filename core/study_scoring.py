"""How the faithfulness study scores its maps (`core.faithfulness_study` makes them and writes the record).

Every map set (an explainer's maps of one model, or a baseline map) is scored on each model's predicted-class
probability in three families of removal (`core.study_scores.METRICS`): single pixels (deletion to the mean colour,
insertion from a blurred image: version 1's scores), whole patches of a stated grid with both substrates (the mean
colour and a blurred image), and ROAD (the removed pixels imputed from their neighbours, most and least relevant
first). Each score is compared image by image with the random map *like the map*: noise drawn at the side of the
grid the method's map is drawn at (`core.explainer.Explainer.map_side`) and upsampled as the maps are, so a 4 x 4
map is compared with 4 x 4 noise, not with per-pixel noise that scattered removal favours.
"""

from __future__ import annotations

import logging

import numpy as np
from tqdm import tqdm

from core.baseline_maps import BASELINES, baseline_map, localisation, resize_maps
from core.explainer import EXPLAINERS
from core.faithfulness import SUBSTRATES, agreement, deletion_curve, insertion_curve, perturbation_curve
from core.road import road_combined, road_scores
from core.roles import DISTILLED, STUDIED, TEACHER, Role
from core.sanity import sanity_check, unrelated_pair_scores
from core.study_record import PAIRS, FaithfulnessStudy, MethodScores, Pair, pair
from core.study_scores import (METRICS, Agreement, CascadeStep, Comparison, CurveScores, Distribution, Unrelated,
                               matched_side)

log = logging.getLogger(__name__)

PER_PIXEL = "random"  # the per-pixel random map (version 1's only one)
# A map read off a head (the teacher's evidence) learnt the teacher's Grad-CAM: its agreement is with that map.
LEARNT = "grad_cam"


def matched_name(side: int, input_size: int) -> str:
    """The name of the random map drawn at ``side`` cells per side (per pixel: ``random``)."""
    return PER_PIXEL if side >= input_size else f"random_{side}"


def is_baseline(name: str) -> bool:
    return name in BASELINES or matched_side(name) is not None


def _reads_head(name: str) -> bool:
    return name in EXPLAINERS and EXPLAINERS[name].needs_head


def baseline_maps(names: list[str], n: int, size: int, seed: int, prior: np.ndarray | None) -> dict[str, np.ndarray]:
    """Every baseline map set of the study at ``size``: the named baselines and the matched random maps."""
    out = {}
    for name in names:
        side = matched_side(name)
        out[name] = baseline_map("random", n, size, seed, cells=side) if side else baseline_map(name, n, size, seed,
                                                                                                   prior)
    return out


def map_scores(model, x, maps, targets, steps: int, patches: int, fractions: tuple[float, ...],
               seed: int) -> tuple[dict[str, np.ndarray], float]:
    """Every `METRICS` score of one map set on one model, per image, and ROAD's seconds per image."""
    out = {"deletion_auc": deletion_curve(model, x, maps, targets, steps=steps).auc,
           "insertion_auc": insertion_curve(model, x, maps, targets, steps=steps).auc}
    for substrate in SUBSTRATES:
        for mode in ("deletion", "insertion"):
            out[f"patch_{mode}_{substrate}"] = perturbation_curve(model, x, maps, targets, mode=mode, cells=patches,
                                                                  steps=min(steps, patches * patches),
                                                                  substrate=substrate).auc
    morf, lerf = (road_scores(model, x, maps, targets, fractions=fractions, order=order, seed=seed)
                  for order in ("morf", "lerf"))
    out.update(road_morf=morf.mean, road_lerf=lerf.mean, road_combined=road_combined(morf, lerf))
    return out, (morf.seconds + lerf.seconds) / 2


def _earlier_scores(earlier: FaithfulnessStudy | None, name: str, scored: Pair) -> dict[str, np.ndarray] | None:
    """Per-image scores of one earlier score set (as stored: rounded to 4 decimals, NaN where not finite), or None
    when it lacks a score this study computes (a version 1 study has no patches and no ROAD)."""
    method = earlier.methods.get(name) if earlier is not None else None
    stored = method.curves.get(scored) if method else None
    if stored is None or set(stored.scores) != set(METRICS):
        return None
    return {m: np.array([np.nan if v is None else v for v in d.values], dtype=np.float64)
            for m, d in stored.scores.items()}


def score_curves(cfg, explaining: dict[str, tuple[Role, ...]], subject, maps: dict, subsets: dict,
                 baselines: list[str], unchanged: set[Role],
                 earlier: FaithfulnessStudy | None) -> tuple[dict, list[float]]:
    """``{map name: {pair: {metric: per-image scores}}}``: each map set on each model's probability (a baseline
    on each model as its own pair: one map whichever model), taken from ``earlier`` where both models are
    unchanged; and ROAD's seconds per image of each set it scored. A method's maps are those of the models in
    ``explaining[method]``. A method reading a head is always scored afresh: the checkpoints' digests do not
    cover its head, which may be retrained beside an unchanged student."""
    curves: dict[str, dict[Pair, dict[str, np.ndarray]]] = {}
    road_seconds = []
    for name in tqdm(list(cfg.methods) + baselines, desc="scoring the maps", unit="map", leave=False):
        idx, curves[name] = subsets[name], {}
        for scored in PAIRS:
            if is_baseline(name) and scored.cross:
                continue
            if not is_baseline(name) and scored.explainer not in explaining[name]:
                continue
            if {scored.explainer, scored.scorer} <= unchanged and not _reads_head(name) and \
                    (kept := _earlier_scores(earlier, name, scored)) is not None:
                curves[name][scored] = kept
                continue
            model, meta = subject.models[scored.scorer], subject.metas[scored.scorer]
            m = resize_maps(maps[scored.explainer][name], meta.input_size)  # every map set holds exactly images idx
            x, targets = subject.xs[scored.scorer][idx], subject.preds[scored.scorer][idx].tolist()
            curves[name][scored], seconds = map_scores(model, x, m, targets, cfg.steps, cfg.patches,
                                                       tuple(cfg.road_fractions), cfg.seed)
            road_seconds.append(seconds)
        log.info("scored %s on %d images", name, len(idx))
    return curves, road_seconds


def baseline_subsets(baselines: list[str], subsets: dict[str, np.ndarray], sides: dict[Role, dict[str, int]],
                     input_size: dict[Role, int], n: int) -> dict[str, np.ndarray]:
    """The images each baseline is scored on: a random map drawn at a method's side on the images of the methods
    compared with it (the slow methods' subset for occlusion's or the surrogates' grids), every other on all."""
    users: dict[str, list[np.ndarray]] = {}
    for role, by_method in sides.items():
        for method, side in by_method.items():
            users.setdefault(matched_name(side, input_size[role]), []).append(subsets[method])
    return {b: np.unique(np.concatenate(users[b])) if matched_side(b) is not None and b in users else np.arange(n)
            for b in baselines}


def method_scores(name: str, curves: dict, idx: np.ndarray, maps: dict, seconds: dict, subject,
                  sides: dict[Role, dict[str, int]],
                  subsets: dict[str, np.ndarray]) -> MethodScores:
    """One map set's record: its scores against its matched random map's, agreement, times, localisation."""
    baseline = is_baseline(name)
    made = [r for r in STUDIED if name in maps[r]]
    versus = None if baseline else {r: matched_name(sides[r][name], subject.metas[r].input_size) for r in made}
    scored = {}
    for p, value in curves[name].items():
        against = PER_PIXEL if baseline else versus[p.explainer]
        rand = curves[against][pair(p.scorer, p.scorer)]  # a random map is one map whichever model scores it
        random_itself = name == PER_PIXEL or matched_side(name) is not None
        at = np.searchsorted(subsets[against], idx)  # the random map's scores of the same images
        comparisons = {} if random_itself else {m: Comparison.paired(value[m], rand[m][at]) for m in METRICS}
        scored[p] = CurveScores({m: Distribution.of(value[m]) for m in METRICS}, comparisons)
    together = None
    if not baseline and len(made) == len(STUDIED):  # a baseline is one map for both
        together = _agreement(maps[TEACHER][name], maps[DISTILLED][name])
    elif _reads_head(name) and made == [DISTILLED] and LEARNT in maps[TEACHER]:  # with what it learnt
        # the teacher's Grad-CAM is a cheap method: its maps hold every study image, so idx picks the same ones
        learnt = resize_maps(maps[TEACHER][LEARNT][idx], subject.metas[DISTILLED].input_size)
        together = _agreement(learnt, maps[DISTILLED][name])
    ds = subject.ds
    return MethodScores(
        int(len(idx)), baseline, scored, together,
        None if baseline else {r: Distribution.of(seconds[r][name]) for r in made},
        None if ds.masks is None else {r: localisation(maps[r][name], ds, idx, subject.metas[r].input_size)
                                       for r in made},
        versus, None if baseline else {r: sides[r][name] for r in made})


def _agreement(teacher_maps: np.ndarray, student_maps: np.ndarray) -> Agreement:
    pairs = [agreement(t, s) for t, s in zip(teacher_maps, student_maps)]
    return Agreement(*(Distribution.of([p[k] for p in pairs]) for k in ("spearman", "iou")))


def cascade_steps(runs) -> tuple[CascadeStep, ...]:
    """The cascade's steps over images: each similarity over the maps that did not turn constant, and how many
    did (a constant map explains nothing: it is counted, not dropped as missing)."""
    steps = []
    for s, step in enumerate(runs[0].steps):
        at = [r.steps[s] for r in runs]
        steps.append(CascadeStep(step.layer, Distribution.of([a.spearman for a in at]),
                                 Distribution.of([a.iou for a in at]), Distribution.of([a.abs_spearman for a in at]),
                                 Distribution.of([a.ssim for a in at]), sum(bool(a.constant) for a in at)))
    return tuple(steps)


def sanity_cascades(cfg, explaining: dict[str, tuple[Role, ...]], subject, unchanged: set[Role], earlier: FaithfulnessStudy | None,
                    cheap: tuple[str, ...]) -> dict[str, dict[Role, tuple[CascadeStep, ...]]]:
    """The model-randomisation cascade of each cheap method on the first few images, by explained model (an
    unchanged model's taken from ``earlier`` when it counted constant maps)."""
    few = np.arange(min(len(subject.ds), cfg.sanity_images))
    out: dict[str, dict[Role, tuple[CascadeStep, ...]]] = {}
    for method in [m for m in cfg.methods if m in cheap]:
        out[method] = {}
        for role in explaining[method]:
            kept = earlier.cascade(method, role) if earlier is not None and role in unchanged and \
                not _reads_head(method) else ()
            if kept and kept[-1].constant is not None:
                out[method][role] = kept
                continue
            model, xs, preds = subject.models[role], subject.xs[role], subject.preds[role]
            out[method][role] = cascade_steps([sanity_check(model, xs[i:i + 1], method, int(preds[i]), n_layers=None)
                                               for i in few])
    return out


def unrelated_pairs(cfg, explaining: dict[str, tuple[Role, ...]], maps: dict,
                    cheap: tuple[str, ...]) -> dict[str, dict[Role, Unrelated]]:
    """What "unrelated" scores, beside the cascade: each cheap method's maps of different study images from one
    model, each image's map with the next one's."""
    out: dict[str, dict[Role, Unrelated]] = {}
    for method in [m for m in cfg.methods if m in cheap]:
        out[method] = {}
        for role in explaining[method]:
            scores = unrelated_pair_scores(maps[role][method])
            out[method][role] = Unrelated(*(Distribution.of(scores[k]) for k in ("spearman", "abs_spearman", "ssim",
                                                                                "iou")))
    return out

