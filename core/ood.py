"""Is an image like the ones a model was trained on? ``python -m core.ood DATASET``.

A classifier gives every input a class, a screenshot included. Two scores from the literature, both higher on
inputs unlike the training data:

- ``energy``: ``-logsumexp(logits)`` (Liu et al., "Energy-based Out-of-distribution Detection", NeurIPS 2020);
- ``mahalanobis``: the smallest Mahalanobis distance of the pooled features to a class mean, with one shared
  covariance fitted on the training split (Lee et al., "A Simple Unified Framework for Detecting
  Out-of-Distribution Samples and Adversarial Attacks", NeurIPS 2018).

The score used is the one that better separates the validation split from other datasets' training images
(test is never used for a choice); an image above the threshold that 95% of the validation images stay under
gets a warning. Written with the checkpoint's sha256 to ``<checkpoints>/<dataset>/ood.json`` (the Mahalanobis
statistics to ``ood.npz``), beside what it does on test: the share of the dataset's own test images it flags
and how well it tells them from other datasets' test images (AUROC).
"""

from __future__ import annotations

import argparse
import io
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core import checkpoints
from core.cam import cam_head
from core.checkpoints import CheckpointMeta
from core.catalog import DATASETS, dataset_status
from core.data import load_dataset, materialize
from core.featuremaps import capture_activations
from core.inference import batch_for
from core.metrics import MetricsError

SCORES = ("energy", "mahalanobis")
QUANTILE = 0.95  # the share of validation images below the threshold: about 5% of in-distribution images warned
FILE, STATS_FILE = "ood.json", "ood.npz"
SHRINK = 1e-2  # ridge on the covariance, times its mean variance: pooled features have near-null directions


class OodError(ValueError):
    """An ood.json or ood.npz that cannot be used (unreadable, malformed, or made for another checkpoint)."""


@dataclass(frozen=True)
class OodThreshold:
    score: str  # one of SCORES
    threshold: float
    quantile: float
    model: str  # the checkpoint's role (teacher)
    model_sha256: str
    val_images: int
    selection_auroc: dict | None = None  # score -> AUROC, validation vs other datasets' training images
    test_flagged: float | None = None  # share of the dataset's own test images above the threshold
    test_auroc: dict | None = None  # other dataset -> AUROC, their test images vs ours
    # "flagged" / "not_flagged" -> {"images", "accuracy"}: the model's accuracy on its own test images either
    # side of the threshold (does a warning mark images it gets wrong more often?)
    test_accuracy: dict | None = None
    versions: dict | None = None


@dataclass(frozen=True)
class FeatureStats:
    """Class means of the pooled features and the eigen-decomposition of their shared covariance."""

    means: np.ndarray  # (K, C)
    eigvecs: np.ndarray  # (C, C), columns
    eigvals: np.ndarray  # (C,), shrunk, > 0

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Smallest squared Mahalanobis distance of each row to a class mean."""
        d = [((((features - m) @ self.eigvecs) ** 2) / self.eigvals).sum(1) for m in self.means]
        return np.min(np.stack(d, 1), 1)


def auroc(positive, negative) -> float:
    """Area under the ROC curve of a score that should be higher on ``positive`` than on ``negative``: the
    chance that a random positive outscores a random negative, ties counting one half (Mann-Whitney)."""
    pos = np.sort(np.ravel(np.asarray(positive, dtype=float)))
    neg = np.sort(np.ravel(np.asarray(negative, dtype=float)))
    if pos.size == 0 or neg.size == 0:
        raise MetricsError("auroc needs at least one positive and one negative score")
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise MetricsError("auroc needs finite scores")
    below = np.searchsorted(neg, pos, side="left")
    equal = np.searchsorted(neg, pos, side="right") - below
    return float((below + 0.5 * equal).sum() / (pos.size * neg.size))


def energy(logits: torch.Tensor) -> np.ndarray:
    """``-logsumexp`` of each row of logits (temperature 1): higher is less like the training data."""
    return (-torch.logsumexp(logits.float(), dim=1)).numpy()


def pooled_outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
    """Logits and the pooled features the classifier reads (`core.models.CamHead`) of a normalised batch."""
    head = cam_head(model)
    capture = capture_activations(model, x, [head.layer])
    act = next(iter(capture.activations.values())).float()
    return capture.logits.float(), (F.relu(act) if head.relu else act).mean((2, 3)).numpy()


def outputs(model: nn.Module, meta: CheckpointMeta, images: torch.Tensor, batch_size: int = 64):
    """Logits and pooled features of uint8 images (normalised with the checkpoint's statistics), in batches."""
    parts = [pooled_outputs(model, batch_for(meta, images[i:i + batch_size]))
             for i in range(0, len(images), batch_size)]
    return torch.cat([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def fit_stats(features: np.ndarray, targets: np.ndarray, classes: int) -> FeatureStats:
    means = np.stack([features[targets == c].mean(0) for c in range(classes)])
    centred = features - means[targets]
    cov = centred.T @ centred / max(len(features) - classes, 1)
    cov += SHRINK * float(np.trace(cov)) / len(cov) * np.eye(len(cov))
    eigvals, eigvecs = np.linalg.eigh(cov)
    return FeatureStats(means.astype(np.float32), eigvecs.astype(np.float32), eigvals.astype(np.float32))


def scores(model, meta, images, stats: FeatureStats) -> dict[str, np.ndarray]:
    logits, feats = outputs(model, meta, images)
    return {"energy": energy(logits), "mahalanobis": stats.distance(feats)}


def _images(dataset: str, split: str, meta: CheckpointMeta, root, max_per_class: int | None, own: bool):
    train = meta.train or {}
    # another dataset is read with its own split defaults: only its images matter
    kwargs = dict(seed=int(train.get("data_seed", 0)), val_fraction=float(train.get("val_fraction", 0.15)),
                  protocol=train.get("protocol", "official"), val_carve=train.get("val_carve", "random")) if own else {}
    ds = load_dataset(dataset, split, root=root, input_size=meta.input_size, **kwargs)
    data = materialize(ds, progress=False, max_per_class=max_per_class)
    return data.images, data.targets.numpy()


def _others(meta: CheckpointMeta, root) -> list[str]:
    return [d for d in DATASETS if d != meta.dataset and dataset_status(d, root)["available"]]


def fit(path: str | Path, root: str | None = None, other_per_class: int = 50) -> tuple[OodThreshold, FeatureStats]:
    """Fit both scores, choose one on validation against other datasets' training images, measure on test."""
    model, meta = checkpoints.load(path)
    train_images, train_targets = _images(meta.dataset, "train", meta, root, None, True)
    _, train_feats = outputs(model, meta, train_images)
    stats = fit_stats(train_feats, train_targets, meta.num_classes)
    del train_images, train_feats
    val = scores(model, meta, _images(meta.dataset, "val", meta, root, None, True)[0], stats)
    others = _others(meta, root)
    other_train = [scores(model, meta, _images(o, "train", meta, root, other_per_class, False)[0], stats)
                   for o in others]
    selection = {s: auroc(np.concatenate([o[s] for o in other_train]), val[s]) for s in SCORES} if others else {}
    score = max(selection, key=selection.get) if selection else "energy"
    threshold = float(np.quantile(val[score], QUANTILE))
    test_images, test_targets = _images(meta.dataset, "test", meta, root, None, True)
    test_logits, test_feats = outputs(model, meta, test_images)
    test = energy(test_logits) if score == "energy" else stats.distance(test_feats)
    correct = (test_logits.argmax(1).numpy() == test_targets)
    test_auroc = {o: auroc(scores(model, meta, _images(o, "test", meta, root, other_per_class, False)[0],
                                  stats)[score], test) for o in others}
    return (OodThreshold(score, threshold, QUANTILE, meta.role, checkpoints.file_sha256(path), len(val[score]),
                         selection, float((test > threshold).mean()), test_auroc,
                         test_accuracy=accuracy_by_flag(correct, test > threshold),
                         versions=checkpoints.library_versions()),
            stats)


def accuracy_by_flag(correct: np.ndarray, flagged: np.ndarray) -> dict:
    """``{"flagged": {"images", "accuracy"}, "not_flagged": ...}``; accuracy None for an empty side."""
    sides = {"flagged": flagged, "not_flagged": ~flagged}
    return {name: {"images": int(side.sum()), "accuracy": float(correct[side].mean()) if side.any() else None}
            for name, side in sides.items()}


def write(result: OodThreshold, stats: FeatureStats, folder: str | Path) -> Path:
    folder = Path(folder)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, means=stats.means, eigvecs=stats.eigvecs.astype(np.float16), eigvals=stats.eigvals)
    checkpoints.atomic_write_bytes(folder / STATS_FILE, lambda h: h.write(buffer.getvalue()))
    path = folder / FILE
    checkpoints.atomic_write_text(path, json.dumps(asdict(result), indent=1, sort_keys=True) + "\n")
    return path


def _number(data: dict, name: str, path: Path, lo: float = -math.inf, hi: float = math.inf) -> float:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not lo < value < hi:
        raise OodError(f"{path}: {name} must be a finite number in ({lo}, {hi}), got {value!r}")
    return float(value)


def _check_accuracy_by_flag(split, path: Path) -> None:
    if split is None:
        return
    ok = isinstance(split, dict) and set(split) == {"flagged", "not_flagged"} and all(
        isinstance(side, dict) and isinstance(side.get("images"), int) and not isinstance(side["images"], bool)
        and side["images"] >= 0 and (side.get("accuracy") is None or (
            isinstance(side["accuracy"], (int, float)) and not isinstance(side["accuracy"], bool)
            and 0 <= side["accuracy"] <= 1)) for side in split.values())
    if not ok:
        raise OodError(f"{path}: test_accuracy must be {{'flagged': {{'images': n, 'accuracy': 0..1 or null}}, "
                       f"'not_flagged': ...}}, got {split!r:.120}")


def load(folder: str | Path, model_sha256: str, channels: int) -> tuple[OodThreshold, FeatureStats] | None:
    """The detector in ``folder`` for the checkpoint with this sha256 (``channels`` pooled features); None
    when there is no ood.json.

    Raises:
        OodError: a file is unreadable or malformed, or was fitted for another checkpoint.
    """
    folder = Path(folder)
    path = folder / FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise OodError(f"{path}: cannot be read ({err})") from None
    if not isinstance(data, dict):
        raise OodError(f"{path}: expected a JSON object, got {type(data).__name__}")
    if data.get("score") not in SCORES:
        raise OodError(f"{path}: score must be one of {', '.join(SCORES)}, got {data.get('score')!r}")
    _number(data, "threshold", path)
    _number(data, "quantile", path, 0, 1)
    if data.get("model_sha256") != model_sha256:
        raise OodError(f"{path}: fitted for another checkpoint (sha256 {str(data.get('model_sha256'))[:12]}..., "
                       f"the checkpoint is {model_sha256[:12]}...); run python -m core.ood again")
    _check_accuracy_by_flag(data.get("test_accuracy"), path)
    result = OodThreshold(**{k: v for k, v in data.items() if k in OodThreshold.__dataclass_fields__})
    try:
        with np.load(folder / STATS_FILE, allow_pickle=False) as z:
            stats = FeatureStats(z["means"].astype(np.float32), z["eigvecs"].astype(np.float32),
                                 z["eigvals"].astype(np.float32))
    except (OSError, KeyError, ValueError) as err:
        raise OodError(f"{folder / STATS_FILE}: cannot be read ({err})") from None
    if stats.means.ndim != 2 or stats.means.shape[1] != channels or stats.eigvecs.shape != (channels, channels) \
            or stats.eigvals.shape != (channels,) or not (stats.eigvals > 0).all() \
            or not all(np.isfinite(a).all() for a in (stats.means, stats.eigvecs, stats.eigvals)):
        raise OodError(f"{folder / STATS_FILE}: statistics do not fit a model with {channels} pooled features "
                       "or are not finite")
    return result, stats


def assess(model: nn.Module, meta: CheckpointMeta, x: torch.Tensor, detector: tuple[OodThreshold, FeatureStats]
           ) -> dict:
    """The chosen score of one normalised image against the threshold: ``{"score", "value", "threshold",
    "unusual"}``."""
    result, stats = detector
    logits, feats = pooled_outputs(model, x)
    value = float(energy(logits)[0] if result.score == "energy" else stats.distance(feats)[0])
    return {"score": result.score, "value": value, "threshold": result.threshold,
            "unusual": bool(value > result.threshold)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m core.ood", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--checkpoints", default="checkpoints", help="checkpoint root (default: checkpoints)")
    parser.add_argument("--root", default=None, help="data root (default: $KD_DATA_ROOT, ../shared/datasets)")
    parser.add_argument("--other-per-class", type=int, default=50,
                        help="images per class taken from each other dataset (selection and AUROC)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = Path(args.checkpoints) / args.dataset
    result, stats = fit(folder / "teacher.pt", args.root, args.other_per_class)
    print(f"{write(result, stats, folder)}: {result.score} (selection AUROC "
          + ", ".join(f"{k} {v:.3f}" for k, v in (result.selection_auroc or {}).items())
          + f"), threshold {result.threshold:.3f} ({result.quantile:.0%} of {result.val_images} validation images "
          f"below), {result.test_flagged:.1%} of test flagged ("
          + ", ".join(f"{k.replace('_', ' ')}: {v['images']} images, accuracy "
                      + ("n/a" if v["accuracy"] is None else f"{v['accuracy']:.3f}")
                      for k, v in (result.test_accuracy or {}).items())
          + "); test AUROC "
          + ", ".join(f"{k} {v:.3f}" for k, v in (result.test_auroc or {}).items()))


if __name__ == "__main__":
    main()
