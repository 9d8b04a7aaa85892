"""Evaluate checkpoints on a split: metrics with intervals per model, agreement per teacher-student pair.

``python -m core.evaluate --teacher T.pt --student S.pt [--write]`` prints a summary and, with
``--write``, stores the reports in the checkpoints' JSON metadata (weights are not touched). Metadata in the
checkpoint root is shipped work (`core.shipping`): a report over fewer test images or bootstrap resamples than the
one it would replace, or without the agreement with the teacher that one has, is refused unless ``--force``, and
every metadata file replaced there is kept under ``earlier/replaced-<UTC time>/`` first.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Collection

import numpy as np
import torch

from core import checkpoints, shipping
from core.data import load_dataset, materialize
from core.inference import batch_for, predict_tensor
from core.layout import in_checkpoint_root
from core.metrics import classification_report, pair_report
from core.stopwatch import time_callable


def evaluation_split(meta: checkpoints.CheckpointMeta, split: str = "test", root: str | None = None,
                     max_per_class: int | None = None):
    """The evaluation split a checkpoint was trained for (same protocol, seed and input size), in memory."""
    train_cfg = meta.train or {}
    ds = load_dataset(meta.dataset, split, root=root, input_size=meta.input_size,
                      seed=int(train_cfg.get("data_seed", 0)), protocol=train_cfg.get("protocol", "official"),
                      val_carve=train_cfg.get("val_carve", "random"))
    return materialize(ds, progress=True, max_per_class=max_per_class)


def latency_ms(model: torch.nn.Module, input_size: int, repeats: int = 20) -> dict:
    """Median and IQR of one single-image forward pass, in milliseconds."""
    x = torch.zeros(1, 3, input_size, input_size)
    with torch.no_grad():
        result = time_callable(lambda: model(x), repeats=repeats, warmup=3)
    return {"median_ms": result.median * 1000, "iqr_ms": result.iqr * 1000, "threads": torch.get_num_threads()}


def evaluate_checkpoints(paths: dict[str, str | Path], split: str = "test", root: str | None = None,
                         write: bool = False, n_boot: int = 1000, exclude: Callable[[str], bool] | None = None,
                         teacher_key: str = "teacher", max_per_class: int | None = None,
                         also_without: Callable[[str], bool] | None = None, force: bool = False,
                         written: Collection[str] | None = None) -> dict:
    """Evaluate several checkpoints of one dataset on the same split.

    Args:
        paths: name -> checkpoint path; the entry ``teacher_key`` (if present) is paired with every other.
        exclude: optional predicate on a file path; matching test images are left out (e.g. near-duplicates).
        also_without: optional predicate on a file path: the result gets a second report, ``"without"``, of the
            same predictions with the matching images left out (each image is predicted once).
        max_per_class: evaluate on at most this many images per class (a quick look, not a published number).
        write: store each report under ``metrics[split]`` in the checkpoint's JSON metadata (`write_reports`).
        force: with ``write``, replace shipped reports even with lesser ones.
        written: with ``write``, the names whose metadata is written (None: all); the others are evaluated only
            (a teacher a run's students are paired with, whose file is not the run's).

    Returns:
        ``{"models": {name: report}, "pairs": {name: pair report vs the teacher}, "split": split}``, and
        ``"without"`` (``{"models", "pairs"}``) when ``also_without`` is given.
    """
    loaded = {name: checkpoints.load(path) for name, path in paths.items()}
    datasets = {m.dataset for _, m in loaded.values()}
    if len(datasets) != 1:
        raise ValueError(f"checkpoints come from different datasets: {sorted(datasets)}")
    cache: dict[tuple, tuple[torch.Tensor, torch.Tensor, list, list[str]]] = {}
    predicted, latency = {}, {}
    for name, (model, meta) in loaded.items():
        key = (meta.input_size, meta.train.get("protocol", "official"), meta.train.get("data_seed", 0))
        if key not in cache:
            data = evaluation_split(meta, split, root, max_per_class)
            keep = torch.ones(len(data), dtype=torch.bool)
            files = [str(f) for f in getattr(data, "paths", None) or []]
            if exclude is not None and files:
                keep = torch.tensor([not exclude(f) for f in files])
                files = [f for f, k in zip(files, keep.tolist()) if k]
            cache[key] = (data.images[keep], data.targets[keep], data.classes, files)
        images, targets, classes, files = cache[key]
        if list(classes) != list(meta.classes):
            raise ValueError(f"{name}: trained on classes {meta.classes}, split has {classes}")
        predicted[name] = (predict_tensor(model, batch_for(meta, images)), targets.numpy(), files)
        latency[name] = latency_ms(model, meta.input_size)
    reports, pairs = _reports(loaded, predicted, None, n_boot, teacher_key)
    for name, report in reports.items():
        report["latency"] = latency[name]
    result = {"models": reports, "pairs": pairs, "split": split}
    if also_without is not None:
        models, paired = _reports(loaded, predicted, also_without, n_boot, teacher_key)
        result["without"] = {"models": models, "pairs": paired}
    if write:
        names = [name for name in loaded if written is None or name in written]
        entries = {name: {**reports[name], **({"vs_teacher": pairs[name]} if name in pairs else {})}
                   for name in names}
        write_reports({name: (Path(paths[name]), loaded[name][1]) for name in names}, entries, split, force)
    return result


def write_reports(checkpoint_metas: dict[str, tuple[Path, checkpoints.CheckpointMeta]], entries: dict[str, dict],
                  split: str, force: bool = False) -> None:
    """Store ``entries[name]`` under ``metrics[split]`` in the metadata of each ``name``'s checkpoint.

    Metadata in the checkpoint root is shipped work (`core.shipping`): an entry with less than the one it replaces
    (`report_shortfalls`) is refused, for all of them before any is written, unless ``force``; the files replaced
    there are moved under their folder's ``earlier/replaced-<UTC time>/`` (one per folder) before the new ones go in.

    Raises:
        core.shipping.ShippingRefused: naming the first metadata file whose report would be replaced with less.
    """
    shipped = {name: path for name, (path, _) in checkpoint_metas.items() if in_checkpoint_root(path)}
    for name, path in shipped.items():
        old = checkpoint_metas[name][1].metrics.get(split)
        shipping.refuse_lesser(f"{split} metrics", checkpoints.meta_path(path),
                               report_shortfalls(entries[name], old), force)
    for folder in sorted({path.parent for path in shipped.values()}):
        shipping.keep_replaced(folder, [checkpoints.meta_path(p).name for p in shipped.values() if p.parent == folder])
    for name, (path, meta) in checkpoint_metas.items():
        meta.metrics = {**meta.metrics, split: entries[name]}
        checkpoints.atomic_write_text(checkpoints.meta_path(path), meta.to_json())


def report_shortfalls(new: dict, shipped) -> list[str]:
    """What a report has less of than the ``shipped`` one it would replace: test images, bootstrap resamples (its
    intervals' precision), or the agreement with the teacher (a student evaluated without it)."""
    if not isinstance(shipped, dict):  # nothing, or nothing readable, to lose
        return []

    def count(key: str):
        value = shipped.get(key)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    less = [shipping.at_least(name, new.get(key), count(key)) if count(key) is not None else None
            for name, key in (("test images", "n"), ("bootstrap resamples", "n_boot"))]
    if "vs_teacher" in shipped and "vs_teacher" not in new:
        less.append("the agreement with the teacher: none (give --teacher too)")
    return [x for x in less if x]


def _reports(loaded: dict, predicted: dict, drop: Callable[[str], bool] | None, n_boot: int,
             teacher_key: str) -> tuple[dict, dict]:
    """Each model's report, and each one's pair report against the teacher, on the images ``drop`` keeps."""
    reports, probs, labels = {}, {}, None
    for name, (_, meta) in loaded.items():
        p, y, files = predicted[name]
        if drop is not None and files:
            keep = np.array([not drop(f) for f in files])
            p, y = p[keep], y[keep]
        probs[name], labels = p, y
        reports[name] = classification_report(p, y, list(meta.classes), n_boot=n_boot, seed=0)
    pairs = {}
    if teacher_key in probs:
        for name in probs:
            if name != teacher_key and len(probs[name]) == len(probs[teacher_key]):
                pairs[name] = pair_report(labels, probs[teacher_key], probs[name])
    return reports, pairs


def print_summary(result: dict) -> None:
    """A plain-text table of the main numbers."""
    print(f"\nSplit: {result['split']}")
    print(f"{'model':<22}{'acc':>8}{'95% CI':>18}{'macro F1':>10}{'bal acc':>9}{'ECE':>7}{'ms/img':>8}")
    for name, r in result["models"].items():
        lo, hi = r["accuracy_ci"]
        print(f"{name:<22}{r['accuracy']:>8.4f}{f'[{lo:.3f}, {hi:.3f}]':>18}{r['macro_f1']:>10.4f}"
              f"{r['balanced_accuracy']:>9.4f}{r['ece']:>7.3f}{r['latency']['median_ms']:>8.1f}")
    for name, p in result["pairs"].items():
        print(f"{name} vs teacher: agreement {p['agreement']:.4f}, McNemar p = {p['mcnemar']['p_value']:.3g}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m core.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", help="teacher checkpoint (.pt with .json beside it)")
    parser.add_argument("--student", action="append", default=[],
                        help="student checkpoint; repeat for several (named student, student2, ...)")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"], help="split to evaluate")
    parser.add_argument("--root", default=None, help="data root (default: $KD_DATA_ROOT, ../shared/datasets)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    parser.add_argument("--write", action="store_true", help="store the reports in the checkpoints' metadata")
    parser.add_argument("--force", action="store_true",
                        help="with --write, replace shipped reports even with ones over fewer test images or "
                             "bootstrap resamples (the replaced metadata is kept under earlier/)")
    args = parser.parse_args(argv)
    paths = {"teacher": args.teacher} if args.teacher else {}
    for i, s in enumerate(args.student):
        paths["student" if i == 0 else f"student{i + 1}"] = s
    if not paths:
        parser.error("give --teacher and/or --student")
    try:
        result = evaluate_checkpoints(paths, args.split, args.root, args.write, args.bootstrap, force=args.force)
    except shipping.ShippingRefused as err:  # nothing was written
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    print_summary(result)


if __name__ == "__main__":
    main()
