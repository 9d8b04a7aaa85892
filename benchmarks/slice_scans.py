"""Which scans do a slice dataset's images come from, and what kind of held-out image is its test split? Found from
the pixels (`core.scans`; no model runs).

    python benchmarks/slice_scans.py [--dataset alzheimer] [--threshold 0.97] [--per-end 2]

On the official split: the training images grouped into scans (how many, their sizes, whether a scan ever holds two
classes); for each test image, its correlation with the nearest training image, whether it falls in a scan that
holds training slices and how far it lies from that scan's nearer end; the same for the recipe's validation carve
(a seeded 15% of each class at random, `core.catalog.stratified_split`) and for a carve of the ``--per-end``
outermost slices at each end of every training scan. A held-out image whose nearest training image correlates
above the threshold is a neighbouring slice of a scan the model trains on. Writes
``benchmarks/results/slice_scans_<dataset>.json`` and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.report import measured_on, write_results  # noqa: E402
from core.catalog import data_root_of, split_files, stratified_split  # noqa: E402
from core.checkpoints import now_iso  # noqa: E402
from core.data import load_dataset  # noqa: E402
from core.layout import PREDICTIONS_FILE, dataset_folder  # noqa: E402
from core.scans import SCAN_THRESHOLD, find_scans, outer_slices, positions, slice_signatures  # noqa: E402
from core.stopwatch import environment  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
VAL_FRACTION, DATA_SEED = 0.15, 0  # the recipe's validation carve (core.recipe.TrainConfig)
BINS = (0.0, 0.9, 0.93, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0)
QUANTILES = (0.1, 0.5, 0.9)


def nearest(a: np.ndarray, b: np.ndarray, rows: int = 1024) -> np.ndarray:
    """Each row of ``a``: its highest correlation with a row of ``b``."""
    return np.concatenate([(a[i:i + rows] @ b.T).max(1) for i in range(0, len(a), rows)]) if len(a) else np.zeros(0)


def _held_out(name: str, closest: np.ndarray, threshold: float, end_distance: np.ndarray | None = None) -> dict:
    out = {"name": name, "images": int(len(closest)), "nearest_quantiles": np.quantile(closest, QUANTILES).round(4)
           .tolist(), "share_above": round(float((closest > threshold).mean()), 4),
           "histogram": np.histogram(closest, bins=BINS)[0].tolist()}
    if end_distance is not None:
        out["end_distance_quantiles"] = np.quantile(end_distance, QUANTILES).round(3).tolist()
    return out


def accuracy_by_nearness(folder: Path, labels: np.ndarray, adjacent: np.ndarray) -> dict:
    """Each shipped model's test accuracy on the test images next to a training slice and on the others, read from
    its shipped predictions (`core.predictions`); {} where there are none or their rows are not this split's."""
    path = folder / PREDICTIONS_FILE
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as shipped:
        if not np.array_equal(shipped["labels"], labels):
            return {}
        probs = {key[len("probs_"):]: shipped[key] for key in shipped.files if key.startswith("probs_")}
    out = {}
    for model, p in probs.items():
        right = p.argmax(1) == labels
        out[model] = {"adjacent": round(float(right[adjacent].mean()), 4), "further": round(float(right[~adjacent]
                      .mean()), 4), "all": round(float(right.mean()), 4)}
    return out


def study(dataset: str, root: str | None, threshold: float, per_end: int, checkpoints: str | None = None) -> dict:
    data_root = data_root_of(dataset, root)
    train = split_files(dataset, "train", data_root, seed=DATA_SEED, val_fraction=0.0)
    listed = [(cls, rel) for cls, rels in train.items() for rel in sorted(rels)]
    test = load_dataset(dataset, "test", root=str(data_root)).samples  # the order of the shipped predictions' rows
    base = data_root / dataset
    sig = {"train": slice_signatures(base / rel for _, rel in listed),
           "test": slice_signatures(base / rel for rel, _ in test)}
    classes = np.array([cls for cls, _ in listed])

    scans = find_scans(sig["train"], threshold)
    sizes = np.bincount(scans)
    mixed = int(sum(len(set(classes[scans == k])) > 1 for k in range(len(sizes))))
    others = sig["train"] @ sig["train"].T
    np.fill_diagonal(others, -1)

    # test: its scans found together with the training images' (at looser thresholds too: a test slice two or
    # three slices beyond a scan's training slices links to them through its neighbours, or not at all)
    n_train = len(sig["train"])
    joint_sig = np.concatenate([sig["train"], sig["test"]])
    def joined(at: float) -> tuple[np.ndarray, np.ndarray]:  # scans over both splits; test images in a training one
        scans_at = find_scans(joint_sig, at)
        return scans_at, np.isin(scans_at[n_train:], scans_at[:n_train])

    in_training_scans = {str(at): int(joined(at)[1].sum()) for at in (round(threshold - 0.02, 4),
                                                                          round(threshold - 0.01, 4))}
    joint, with_train = joined(threshold)  # the places are measured in the scans found at the threshold itself
    in_training_scans[str(threshold)] = int(with_train.sum())
    place = positions(joint_sig, joint)[n_train:]
    end = np.minimum(place, 1 - place)[with_train]
    test_nearest = nearest(sig["test"], sig["train"])
    rows = [_held_out("test split", test_nearest, threshold, end)]

    index = {item: i for i, item in enumerate(listed)}
    _, carved = stratified_split(train, VAL_FRACTION, DATA_SEED)
    random_val = np.zeros(n_train, bool)
    random_val[[index[(cls, rel)] for cls, rels in carved.items() for rel in rels]] = True
    train_place = positions(sig["train"], scans)
    outer = outer_slices(scans, train_place, per_end)
    plural = "s" if per_end > 1 else ""
    for name, held in ((f"the recipe's validation carve (a seeded {VAL_FRACTION:.0%} of each class)", random_val),
                       (f"the outermost {per_end} slice{plural} at each end of every training scan", outer)):
        closest = nearest(sig["train"][held], sig["train"][~held])
        rows.append(_held_out(name, closest, threshold, np.minimum(train_place, 1 - train_place)[held]))
    labels = np.array([label for _, label in test], dtype=np.int64)
    return {"dataset": dataset, "threshold": threshold, "per_end": per_end, "bins": list(BINS),
            "train_images": n_train, "test_images": int(len(test)), "scans": int(len(sizes)),
            "scan_size_quantiles": np.quantile(sizes, (0, 0.5, 1)).tolist(), "scans_with_two_classes": mixed,
            "train_nearest_quantiles": np.quantile(others.max(1), QUANTILES).round(4).tolist(),
            "test_in_training_scans": in_training_scans, "held_out": rows,
            "accuracy": accuracy_by_nearness(dataset_folder(dataset, root=checkpoints), labels,
                                             test_nearest > threshold)}


def markdown(found: dict) -> str:
    r, thr = found, found["threshold"]
    lo, mid, hi = (int(v) for v in r["scan_size_quantiles"])
    joined = r["test_in_training_scans"]
    looser = ", ".join(f"{n} at {t}" for t, n in joined.items() if float(t) != thr)
    lines = [f"Scans in **{r['dataset']}**, found from the pixels (`python benchmarks/slice_scans.py`, `core.scans`: "
             f"two slices join when their pixels correlate above {thr}). The {r['train_images']} training images "
             f"form **{r['scans']} scans** of {lo}-{hi} slices (median {mid}); {r['scans_with_two_classes']} of them "
             f"hold two classes. Each training image's nearest other training image correlates at "
             f"{r['train_nearest_quantiles'][1]:.3f} (median; 10-90%: {r['train_nearest_quantiles'][0]:.3f}-"
             f"{r['train_nearest_quantiles'][2]:.3f}). **{joined[str(thr)]} of the {r['test_images']} test images lie "
             f"in a scan that also holds training slices** ({looser}: a test slice a few slices beyond its scan's "
             "training slices joins them at a looser threshold).", "",
             "| held-out images | images | nearest training image, median (10-90%) | share above the threshold | "
             "distance from the scan's nearer end, median (10-90%) |", "| --- | --- | --- | --- | --- |"]
    for row in r["held_out"]:
        q, e = row["nearest_quantiles"], row.get("end_distance_quantiles")
        ends = f"{e[1]:.2f} ({e[0]:.2f}-{e[2]:.2f})" if e else "–"
        lines.append(f"| {row['name']} | {row['images']} | {q[1]:.3f} ({q[0]:.3f}-{q[2]:.3f}) | "
                     f"{row['share_above']:.1%} | {ends} |")
    lines += ["", "Distance from the nearer end: 0 at an end slice of its scan, 0.5 in its middle (the test images' "
              f"are measured in the scans found over training and test images together at {thr})."]
    if r["accuracy"]:
        test = r["held_out"][0]
        adjacent = round(test["share_above"] * test["images"])
        lines += ["", "Test accuracy of the shipped models (from their shipped predictions) on the test images next "
                  f"to a training slice (nearest training image above {thr}) and on the others:", "",
                  f"| model | next to a training slice ({adjacent}) | the others ({test['images'] - adjacent}) | all |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {model} | {a['adjacent']:.3f} | {a['further']:.3f} | {a['all']:.3f} |"
                  for model, a in r["accuracy"].items()]
    lines += ["", measured_on(r["created"], r["environment"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="alzheimer")
    parser.add_argument("--root", default=None, help="data root (default: $KD_DATA_ROOT, ../shared/datasets)")
    parser.add_argument("--threshold", type=float, default=SCAN_THRESHOLD)
    parser.add_argument("--per-end", type=int, default=2, help="slices at each end of a scan in the outer carve")
    parser.add_argument("--checkpoints", default=None, help="checkpoint root (default: $KD_CHECKPOINTS, checkpoints/)")
    parser.add_argument("--out", default=None, help="JSON file (default benchmarks/results/slice_scans_<dataset>.json)")
    args = parser.parse_args(argv)
    if not -1 < args.threshold < 1:
        parser.error(f"--threshold must lie in (-1, 1), got {args.threshold}")
    if args.per_end < 1:
        parser.error(f"--per-end must be at least 1, got {args.per_end}")
    found = study(args.dataset, args.root, args.threshold, args.per_end, args.checkpoints)
    found.update(created=now_iso(), environment=environment())
    out = Path(args.out) if args.out else RESULTS / f"slice_scans_{args.dataset}.json"
    print(write_results(out, found, markdown(found)))


if __name__ == "__main__":
    main()
