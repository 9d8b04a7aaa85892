"""Does the student's explanation explain the teacher? ``python -m core.faithfulness_study DATASET``.

On a stratified sample of the test split (the whole split for the phantom), for the shipped teacher and
distilled student and every explainer:
* deletion and insertion AUC on the explaining model's own predicted-class probability, and **cross-model**:
  each model's map deleting / inserting on the *other* model's predicted-class probability;
* the same scores of three baseline maps: random (seeded noise), a centre prior (a Gaussian of a quarter of the
  side) and, on the phantom, the mask prior (the mean training lesion mask), each method compared with the
  random map image by image (paired t-test and sign flips over images);
* teacher-student agreement per image (Spearman, top-10 % IoU);
* the cascading model-randomisation check on a few images (rank correlation per step);
* on the phantom: pointing game with a stated tolerance, energy inside the lesion, IoU of the top 5 %;
* the measured time of each explanation.
The slow methods run on a seeded random subset of the images (stated in the output). The result goes under
``"faithfulness"`` in ``checkpoints/<dataset>/results.json`` with the sha256 of both checkpoints, so a study
of older checkpoints is recognisably stale.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from core import checkpoints
from core.data import load_dataset, materialize
from core.evaluate import evaluation_split
from core.explain import explain
from core.faithfulness import (agreement, deletion_curve, insertion_curve, mask_iou, pointing_game,
                               sanity_check)
from core.inference import batch_for, predict_tensor
from core.stats import paired_difference
from core.stopwatch import environment

log = logging.getLogger(__name__)

CHEAP_METHODS = ("feature_maps", "cam", "grad_cam", "saliency")
SLOW_METHODS = ("integrated_gradients", "occlusion", "gradient_shap", "kernel_shap", "lime")
BASELINES = ("random", "centre", "mask_prior")
ROLES = ("teacher", "student")
# The pointing game's tolerance (Zhang et al.'s 15 px at 224 px), scaled to the input side.
TOLERANCE_AT_224 = 15
DEFAULT_IMAGES = 200


@dataclass
class StudyConfig:
    """Settings of one study (every field is written beside its results)."""

    dataset: str
    checkpoints: str = "checkpoints"
    root: str | None = None
    images: int | None = None  # stratified test images; None: 200 (the phantom: its whole test split)
    slow_images: int = 40  # seeded random subset for SLOW_METHODS
    sanity_images: int = 8
    methods: tuple[str, ...] = CHEAP_METHODS + SLOW_METHODS
    steps: int = 10  # deletion/insertion steps (2 x (steps + 1) forwards per map)
    seed: int = 0
    threads: int | None = None
    # whose maps are made and scored; both models always score. ("student",) is the student variants' study
    # (benchmarks/student_frontier.py): the teacher's own maps are the same for every variant.
    explained: tuple[str, ...] = ROLES


def study_images(meta: checkpoints.CheckpointMeta, images: int | None, root: str | None):
    """The test images: the smallest per-class cap giving at least ``images`` (None: 200, the phantom's all)."""
    if images is None and meta.dataset == "phantom":
        return evaluation_split(meta, root=root)
    images = DEFAULT_IMAGES if images is None else images
    if meta.dataset == "phantom":
        counts = np.bincount(np.asarray(load_dataset("phantom", "test", input_size=32).targets))
    else:
        counts = np.bincount(np.asarray(load_dataset(meta.dataset, "test", root=root, input_size=8,
                                                     protocol=(meta.train or {}).get("protocol", "official")).targets))
    cap = next((c for c in range(1, int(counts.max()) + 1) if np.minimum(counts, c).sum() >= images),
               int(counts.max()))
    return evaluation_split(meta, root=root, max_per_class=cap)


def mask_prior(size: int, n: int = 400, seed: int = 0) -> np.ndarray:
    """Mean lesion mask of phantom training images at ``size`` (where lesions are, without looking)."""
    train = materialize(load_dataset("phantom", "train", input_size=size, seed=seed, n_train=n), progress=False)
    return train.masks.float().mean(0).numpy()


def baseline_map(kind: str, n: int, size: int, seed: int, prior: np.ndarray | None = None) -> np.ndarray:
    """(n, size, size) baseline maps: seeded noise, a centred Gaussian, or the given mask prior."""
    if kind == "random":
        return np.random.default_rng(seed).random((n, size, size)).astype(np.float32)
    if kind == "centre":
        axis = np.arange(size) - (size - 1) / 2
        g = np.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2 * (size / 4) ** 2))
        return np.repeat(g.astype(np.float32)[None], n, axis=0)
    if kind == "mask_prior":
        if prior is None:
            raise ValueError("the mask prior needs the phantom's mean training mask")
        return np.repeat(_resize(prior[None], size), n, axis=0)
    raise ValueError(f"unknown baseline {kind!r}; choose from {BASELINES}")


def _resize(maps: np.ndarray, size: int) -> np.ndarray:
    if maps.shape[-1] == size:
        return np.asarray(maps, dtype=np.float32)
    t = F.interpolate(torch.as_tensor(np.asarray(maps, dtype=np.float32))[:, None], size=(size, size),
                      mode="bilinear", align_corners=False)
    return t[:, 0].numpy()


def tolerant_hit(m: np.ndarray, mask: np.ndarray, tolerance: int) -> float:
    """Pointing game: 1 when the map's maximum lies within ``tolerance`` px (Chebyshev) of the mask."""
    grown = F.max_pool2d(torch.from_numpy(mask.astype(np.float32))[None, None], 2 * tolerance + 1, 1, tolerance)
    return float(grown[0, 0].numpy().ravel()[int(np.argmax(m))] > 0)


def summary(values) -> dict:
    """Distribution of a per-image score: mean, quartiles and n over the finite values, and every value in
    image order (None where not finite, e.g. a constant map's rank correlation)."""
    all_values = np.asarray(values, dtype=np.float64)
    v = all_values[np.isfinite(all_values)]
    listed = [round(float(x), 4) if np.isfinite(x) else None for x in all_values]
    if v.size == 0:
        return {"n": 0, "values": listed}
    q25, median, q75 = np.percentile(v, [25, 50, 75])
    return {"mean": float(v.mean()), "median": float(median), "q25": float(q25), "q75": float(q75),
            "n": int(v.size), "values": listed}


def test_indices(ds, meta: checkpoints.CheckpointMeta, root: str | None) -> list[int]:
    """Each study image's index in the test split as the app numbers it (for links to the Explanations page)."""
    if meta.dataset == "phantom":
        return [int(path.rsplit("/", 1)[1]) for path in ds.paths]
    full = load_dataset(meta.dataset, "test", root=root, input_size=8,
                        protocol=(meta.train or {}).get("protocol", "official"))
    position = {rel: i for i, (rel, _) in enumerate(full.samples)}
    return [position[path] for path in ds.paths]


def compare(a, b) -> dict:
    """Paired comparison of a method's per-image scores with a baseline's on the same images."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    out = paired_difference(a[ok], b[ok], unit="images")
    out.pop("differences")
    return out


def verdict(comparison: dict, better: str) -> str:
    """"yes" / "no: worse" / "not shown": whether a paired 95% interval against the random map excludes 0 on the
    side that is better (``better`` is "lower" or "higher"); an undefined (NaN) interval shows nothing."""
    lo, hi = comparison["ci"]
    good, bad = (hi < 0, lo > 0) if better == "lower" else (lo > 0, hi < 0)
    return "yes" if good else ("no: worse" if bad else "not shown")


def is_stale(study: dict, digests: dict[str, str | None]) -> bool:
    """True when the checkpoints now shipped (``role -> sha256``, None if missing) are not those the study scored."""
    return any(digests.get(role) != sha for role, sha in study.get("checkpoints", {}).items())


# What must match for an earlier study's scores to be taken over (besides the checkpoints and the images).
SAME_SETTINGS = ("images", "slow_images", "sanity_images", "steps", "seed")


def unchanged_roles(earlier: dict | None, cfg: StudyConfig, digests: dict[str, str], fingerprint: str,
                    slow: np.ndarray) -> set[str]:
    """The models whose checkpoint ``earlier`` (a study's dictionary) scored, on the same test images with the
    same settings: their deletion/insertion scores and sanity cascades need not be computed again."""
    if not earlier or earlier.get("test_fingerprint") != fingerprint or earlier.get("slow_subset") != slow.tolist():
        return set()
    if any((earlier.get("config") or {}).get(k) != getattr(cfg, k) for k in SAME_SETTINGS):
        return set()
    return {role for role in ROLES if (earlier.get("checkpoints") or {}).get(role) == digests[role]}


def _earlier_curves(earlier: dict, name: str, key: str) -> dict | None:
    """Per-image AUCs of one earlier score (as stored: rounded to 4 decimals, None for non-finite), or None."""
    stored = (earlier["methods"].get(name) or {}).get(key)
    if not stored or any("values" not in stored.get(m, {}) for m in ("deletion_auc", "insertion_auc")):
        return None
    return {m: np.array([np.nan if v is None else v for v in stored[m]["values"]], dtype=np.float64)
            for m in ("deletion_auc", "insertion_auc")}


def run_study(cfg: StudyConfig, on_progress=None, earlier: dict | None = None) -> dict:
    """Run the study; returns the dictionary written under ``"faithfulness"`` (see the module doc).

    ``earlier``: a study of the same test images and settings. Scores whose explaining and scoring checkpoints
    are both unchanged since it (the teacher's own and its baselines', after a retrain of the student alone) are
    taken from it instead of computed again; the maps are still made, so their times and localisation are new.
    """
    if not cfg.explained or set(cfg.explained) - set(ROLES):
        raise ValueError(f"explained must name some of {ROLES}, got {cfg.explained}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    folder = Path(cfg.checkpoints) / cfg.dataset
    loaded = {role: checkpoints.load(folder / f"{role}.pt") for role in ROLES}
    digests = {role: checkpoints.file_sha256(folder / f"{role}.pt") for role in ROLES}
    metas = {role: meta for role, (_, meta) in loaded.items()}
    ds = study_images(metas["teacher"], cfg.images, cfg.root)
    n = len(ds)
    xs = {role: batch_for(meta, ds.images) for role, meta in metas.items()}
    preds = {role: predict_tensor(loaded[role][0], xs[role]).argmax(1) for role in ROLES}
    slow = np.sort(np.random.default_rng(cfg.seed).choice(n, min(n, cfg.slow_images), replace=False))
    subsets = {m: (slow if m in SLOW_METHODS else np.arange(n)) for m in cfg.methods}
    unchanged = unchanged_roles(earlier, cfg, digests, ds.fingerprint, slow)
    prior = mask_prior(metas["teacher"].input_size) if ds.masks is not None else None
    baselines = [b for b in BASELINES if b != "mask_prior" or prior is not None]

    maps: dict[str, dict[str, np.ndarray]] = {role: {} for role in ROLES}
    seconds: dict[str, dict[str, list]] = {role: {} for role in ROLES}
    jobs = [(role, m) for m in cfg.methods for role in ROLES if role in cfg.explained]
    for k, (role, method) in enumerate(jobs):
        model, meta = loaded[role]
        heat, times = [], []
        for i in tqdm(subsets[method], desc=f"{method} on the {role}", unit="img", leave=False):
            e = explain(model, xs[role][i:i + 1], method, int(preds[role][i]), predict=False)
            heat.append(e.heatmap)
            times.append(e.seconds)
        maps[role][method], seconds[role][method] = np.stack(heat), times
        log.info("%s on the %s: %d maps, median %.4f s", method, role, len(times), float(np.median(times)))
        if on_progress:
            on_progress((k + 1) / (len(jobs) + 2), f"{method} on the {role}")
    for role, meta in metas.items():
        for b in baselines:
            maps[role][b] = baseline_map(b, n, meta.input_size, cfg.seed, prior)
            subsets.setdefault(b, np.arange(n))

    scores: dict[str, dict] = {}
    # the longest part: every map's deletion and insertion curves on both models, 2 x (steps + 1) passes an image
    for name in tqdm(list(cfg.methods) + baselines, desc="deletion and insertion curves", unit="map", leave=False):
        idx = subsets[name]
        entry = {"images": int(len(idx))}
        for explainer in ROLES:
            for scorer in ROLES:
                if name in BASELINES and explainer != scorer:
                    continue  # a baseline is one map whichever model it is said to explain
                if name not in BASELINES and explainer not in cfg.explained:
                    continue
                key = explainer if explainer == scorer else f"{explainer}_on_{scorer}"
                if {explainer, scorer} <= unchanged and (kept := _earlier_curves(earlier, name, key)) is not None:
                    entry[key] = kept
                    continue
                model, meta = loaded[scorer]
                m = _resize(maps[explainer][name], meta.input_size)  # every map set holds exactly the images idx
                targets = preds[scorer][idx].tolist()
                entry[key] = {
                    "deletion_auc": deletion_curve(model, xs[scorer][idx], m, targets, steps=cfg.steps).auc,
                    "insertion_auc": insertion_curve(model, xs[scorer][idx], m, targets, steps=cfg.steps).auc}
        scores[name] = entry
        log.info("scored %s on %d images", name, len(idx))
    if on_progress:
        on_progress((len(jobs) + 1) / (len(jobs) + 2), "agreement, localisation and sanity")

    methods_out = {}
    for name, entry in scores.items():
        idx = subsets[name]
        out = {"images": entry["images"], "baseline": name in BASELINES}
        for key, value in entry.items():
            if key == "images":
                continue
            out[key] = {metric: summary(v) for metric, v in value.items()}
            if name != "random":
                rand = scores["random"][key if key in scores["random"] else key.split("_on_")[1]]
                out[key]["vs_random"] = {metric: compare(value[metric], rand[metric][idx])
                                         for metric in value}
        if name not in BASELINES and len(cfg.explained) == len(ROLES):  # a baseline is one map for both
            pairs = [agreement(t, s) for t, s in zip(maps["teacher"][name], maps["student"][name])]
            out["agreement"] = {k: summary([p[k] for p in pairs]) for k in ("spearman", "iou")}
        made = [role for role in ROLES if name in maps[role]]
        if name not in BASELINES:
            out["seconds"] = {role: summary(seconds[role][name]) for role in made}
        if ds.masks is not None:
            out["localisation"] = {role: localisation(maps[role][name], ds, idx, metas[role].input_size)
                                   for role in made}
        methods_out[name] = out

    sanity = {}
    few = np.arange(min(n, cfg.sanity_images))
    for method in [m for m in cfg.methods if m in CHEAP_METHODS]:
        sanity[method] = {}
        for role in cfg.explained:
            if role in unchanged and role in (earlier.get("sanity") or {}).get(method, {}):
                sanity[method][role] = earlier["sanity"][method][role]
                continue
            model, _ = loaded[role]
            runs = [sanity_check(model, xs[role][i:i + 1], method, int(preds[role][i]), n_layers=None) for i in few]
            sanity[method][role] = [{"layer": step.layer, "spearman": summary([r.steps[s].spearman for r in runs]),
                                     "iou": summary([r.steps[s].iou for r in runs])}
                                    for s, step in enumerate(runs[0].steps)]
    if on_progress:
        on_progress(1.0, "done")
    return {
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("checkpoints", "root", "threads")},
        "images": n, "slow_subset": slow.tolist(), "test_fingerprint": ds.fingerprint,
        "test_index": test_indices(ds, metas["teacher"], cfg.root),
        "true_class": ds.targets.tolist(), "predicted": {role: preds[role].tolist() for role in ROLES},
        "agreement_of_predictions": float(np.mean(preds["teacher"] == preds["student"])),
        "checkpoints": digests,
        "input_size": {role: metas[role].input_size for role in ROLES},
        "tolerance_px": tolerance(metas["teacher"].input_size) if ds.masks is not None else None,
        "methods": methods_out, "sanity": sanity, "environment": environment(),
        # scores of these models (own, baselines, and between two of them) taken from an earlier study
        "scores_from_earlier_study": sorted(unchanged),
        "scoring": "probability of the scoring model's predicted class; maps explain the explaining model's "
                   "predicted class; deletion to the mean colour, insertion from a blurred image",
    }


def tolerance(size: int) -> int:
    return max(1, round(TOLERANCE_AT_224 * size / 224))


def localisation(maps: np.ndarray, ds, idx: np.ndarray, size: int) -> dict:
    """Pointing game (with `tolerance`), energy in the lesion and top-5 % IoU of the maps of images ``idx``, in
    image order (NaN where the image has no lesion)."""
    masks = ds.masks.numpy()[idx]
    if masks.shape[-1] != size:
        masks = _resize(masks.astype(np.float32), size) >= 0.5
    nan = float("nan")
    rows = [(tolerant_hit(m, k, tolerance(size)), pointing_game(m, k)["energy"], mask_iou(m, k, 5.0))
            if k.any() else (nan, nan, nan) for m, k in zip(maps, masks)]
    hit, energy, iou = zip(*rows) if rows else ((), (), ())
    return {"hit": summary(hit), "energy": summary(energy), "iou": summary(iou)}


def write_study(study: dict, checkpoints_dir: str | Path, dataset: str) -> Path:
    """Store the study under ``"faithfulness"`` in the dataset's results.json (atomically, other keys kept)."""
    path = Path(checkpoints_dir) / dataset / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {"dataset": dataset}
    results["faithfulness"] = study
    checkpoints.atomic_write_text(path, json.dumps(results, indent=1, default=_plain) + "\n")
    return path


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("--checkpoints", default="checkpoints", help="folder with <dataset>/{teacher,student}.pt")
    parser.add_argument("--root", help="data root (default: ../shared/datasets or $KD_DATA_ROOT)")
    parser.add_argument("--images", type=int, help="stratified test images (default 200; the phantom: all)")
    parser.add_argument("--slow-images", type=int, default=40, help=f"images for {', '.join(SLOW_METHODS)}")
    parser.add_argument("--sanity-images", type=int, default=8)
    parser.add_argument("--methods", nargs="+", default=list(CHEAP_METHODS + SLOW_METHODS))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--fresh", action="store_true",
                        help="compute every score, even those of checkpoints the study in results.json scored")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = StudyConfig(args.dataset, args.checkpoints, args.root, args.images, args.slow_images, args.sanity_images,
                      tuple(args.methods), args.steps, args.seed, args.threads)
    results = Path(args.checkpoints) / args.dataset / "results.json"
    earlier = None if args.fresh or not results.is_file() else json.loads(results.read_text()).get("faithfulness")
    study = run_study(cfg, earlier=earlier)
    if study["scores_from_earlier_study"]:
        print(f"scores of the unchanged {' and '.join(study['scores_from_earlier_study'])} taken from {results}")
    path = write_study(study, args.checkpoints, args.dataset)
    for name, out in study["methods"].items():
        own = {r: out[r]["deletion_auc"].get("mean", float("nan")) for r in ROLES}
        cross = out.get("student_on_teacher", out["teacher"])["deletion_auc"].get("mean", float("nan"))
        print(f"{name:22s} deletion AUC teacher {own['teacher']:.3f} student {own['student']:.3f} "
              f"student map on the teacher {cross:.3f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
