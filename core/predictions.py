"""Every test image's class probabilities under the shipped models, computed once when the checkpoints are made.

The app's Teacher vs student page shows metrics, a confusion matrix and a gallery over many test images; running
three models over them at page load costs seconds on a first visit. ``python -m core.predictions DATASET``
(also run by `core.reproduce` after shipping) writes ``checkpoints/<dataset>/predictions.npz``: the test labels
and, per shipped role (named by its file's stem, `core.roles.Role.shipped`), the probabilities of every test image,
with the sha256 of the checkpoint they came from. The app uses a role's rows only while that checkpoint is
unchanged, and predicts itself otherwise. In the checkpoint root the file is shipped work (`core.shipping`): one
with fewer test images or models than the file it would replace is refused unless ``--force``, and the file
replaced is kept under ``earlier/replaced-<UTC time>/``.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np

from core import checkpoints, shipping
from core.arguments import RUN_FAILURES, failure_line
from core.catalog import DATASETS
from core.data import data_fingerprint
from core.evaluate import evaluation_split
from core.inference import batch_for, predict_tensor
from core.layout import PREDICTIONS_FILE, checkpoint_file, dataset_folder, in_checkpoint_root
from core.roles import SHIPPED


class PredictionsError(ValueError):
    """A predictions file that cannot be read or does not fit the checkpoints or the test split."""


def write(folder: str | Path, root: str | None = None, force: bool = False) -> Path:
    """Predict the whole test split with every shipped checkpoint in ``folder``; writes ``predictions.npz``.

    In the checkpoint root a file there is replaced only by predictions of at least its test images and models
    (`shortfalls`), or with ``force``, and is kept under ``earlier/`` first (`core.shipping`).

    Raises:
        core.shipping.ShippingRefused: the new predictions have less than the file they would replace.
    """
    folder = Path(folder)
    arrays: dict[str, np.ndarray] = {}
    splits = {}  # the students share the teacher's input size: the split is decoded once
    for role in SHIPPED:
        path = checkpoint_file(folder, role)
        if not path.is_file():
            continue
        model, meta = checkpoints.load(path)
        key = (meta.input_size, meta.train.get("protocol", "official"), meta.train.get("data_seed", 0))
        data = splits[key] = splits.get(key) or evaluation_split(meta, "test", root)
        if getattr(data, "skipped", None):  # rows would no longer line up with the split's images
            raise PredictionsError(f"{path}: {len(data.skipped)} test image(s) cannot be read; fix them first")
        labels, fingerprint = data.targets.numpy().astype(np.int64), data_fingerprint(data)
        if "labels" in arrays and (not np.array_equal(arrays["labels"], labels)
                                   or str(arrays["test_fingerprint"]) != fingerprint):
            raise PredictionsError(f"{path}: its test split differs from the teacher's; predict each apart")
        arrays.update(labels=labels, test_fingerprint=np.array(fingerprint))
        arrays[f"probs_{role.shipped}"] = predict_tensor(model, batch_for(meta, data.images)).astype(np.float32)
        arrays[f"sha256_{role.shipped}"] = np.array(checkpoints.file_sha256(path))
    if not arrays:
        raise PredictionsError(f"{folder}: no checkpoint to predict with")
    path = folder / PREDICTIONS_FILE
    if in_checkpoint_root(folder):
        shipping.refuse_lesser("predictions", path, shortfalls(arrays, path), force)
        shipping.keep_replaced(folder, [PREDICTIONS_FILE])
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    checkpoints.atomic_write_bytes(path, lambda h: h.write(buffer.getvalue()))
    return path


def shortfalls(new: dict[str, np.ndarray], path: Path) -> list[str]:
    """What predictions (``write``'s arrays) have less of than the file at ``path``: test images, or the rows of a
    model it holds (a checkpoint set aside); an unreadable file is named too, as with every shipped file."""
    if not path.is_file():
        return []
    try:
        with np.load(path, allow_pickle=False) as z:
            shipped_images, shipped_roles = len(z["labels"]), [k.removeprefix("probs_") for k in z.files
                                                               if k.startswith("probs_")]
    except (OSError, ValueError, EOFError, KeyError) as err:
        return [f"its {path.name} cannot be read ({type(err).__name__}: {err})"]
    roles = [k.removeprefix("probs_") for k in new if k.startswith("probs_")]
    return [x for x in (shipping.at_least("test images", len(new["labels"]), shipped_images),
                        shipping.missing("models", roles, shipped_roles)) if x]


def load(folder: str | Path, shas: dict[str, str], labels: np.ndarray, n_classes: int) -> dict | None:
    """``{"labels": (N,), "probs": {role: (N, C) float32}}`` for the roles whose checkpoint sha256 in ``shas``
    matches the file; None when there is no file or no role matches. Roles are named by their shipped file's
    stem (``teacher``, ``student``, ``student_label_only``), in ``shas`` as in the result.

    Args:
        labels: the test split's labels in split order, as the app reads them (the file must hold the same).

    Raises:
        PredictionsError: an unreadable file, another test split's labels, or probabilities of another shape.
    """
    path = Path(folder) / PREDICTIONS_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            content = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as err:
        raise PredictionsError(f"{path}: cannot be read ({err})") from None
    n_test = len(labels)
    saved = content.get("labels")
    if saved is None or saved.shape != (n_test,) or saved.dtype.kind not in "iu" or \
            not np.array_equal(saved, np.asarray(labels)):
        raise PredictionsError(f"{path}: made for another test split (its labels differ from the {n_test} here); "
                               "run python -m core.predictions again")
    probs = {}
    for role, sha in shas.items():
        if str(content.get(f"sha256_{role}", "")) != sha:
            continue  # made for another checkpoint of this role: the app predicts it itself
        p = content.get(f"probs_{role}")
        if p is None or p.shape != (n_test, n_classes) or not np.isfinite(p).all():
            raise PredictionsError(f"{path}: the {role} probabilities do not fit {n_test} images of {n_classes} "
                                   "classes or are not finite")
        probs[role] = p.astype(np.float32)
    return {"labels": saved.astype(np.int64), "probs": probs} if probs else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m core.predictions", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(DATASETS), help="dataset whose shipped checkpoints predict")
    parser.add_argument("--checkpoints", default="checkpoints", help="folder holding <dataset>/<role>.pt")
    parser.add_argument("--root", default=None, help="data root (default: $KD_DATA_ROOT, ../shared/datasets)")
    parser.add_argument("--force", action="store_true",
                        help="replace a shipped predictions.npz even with fewer test images or models (the replaced "
                             "file is kept under earlier/)")
    args = parser.parse_args(argv)
    try:
        written = write(dataset_folder(args.dataset, root=args.checkpoints), args.root, force=args.force)
    except shipping.ShippingRefused as err:  # nothing was written
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    except (PredictionsError, *RUN_FAILURES) as err:
        parser.exit(1, f"{parser.prog}: error: {failure_line(err)}\n")
    print(f"wrote {written}")


if __name__ == "__main__":
    main()
