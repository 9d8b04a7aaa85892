"""The teacher's evidence, read off the student: a small head on the student's last feature map, trained to give
the teacher's class activation maps for every class from the student's own single forward pass.

What it learns. The DenseNet teacher's Grad-CAM at its default layer equals ReLU(CAM) (`core.cam`), so the
teacher's maps of every class come from ONE teacher forward (`core.cam.all_class_maps`): training targets for the
whole training split cost one teacher pass per image, no backward and no perturbed copies. Occlusion, integrated
gradients or a FastSHAP-style masking loss would cost tens to hundreds of teacher passes per image on 2 CPU cores,
and a masking loss trains on the very kind of perturbation the faithfulness study scores with; regression to the
teacher's maps leaves every perturbation of the study unseen in training.

The head (`EvidenceHead`, design ``conv3x3``): a 3x3 convolution to ``hidden`` channels, a ReLU and a 1x1 convolution
to one channel per class, on the activation the student's classifier pools (`core.cam.pooled_activation`: taken from
the forward that gives the logits, so logits and maps cost one student pass and the head, about 0.1 ms of the
student's 1.7 ms at 128 px on one CPU thread). Its output is, per class, logits over the positions of that map. Two
cheaper designs (`HEAD_DESIGNS`) fit the teacher's maps worse on every dataset's validation split
(``benchmarks/evidence_head.py``), so the 3x3 is the one shipped.

The loss (`evidence_loss`): per class, the teacher's ReLU(CAM), resized bilinearly to the head's grid and divided by
its sum, is a distribution over positions (uniform where the teacher has no positive evidence for the class); the
head's log-softmax over positions is compared with it by KL(target || head), averaged over classes and images. Only
where the evidence lies is learnt, not its scale, which differs from class to class and image to image and which
every map loses when it is min-max normalised for display. There is no temperature: the head's last convolution sets
the sharpness of its own softmax, so a temperature would only rescale its weights.

The map (`evidence_maps`, the explainer ``teacher_evidence`` in `core.explainers`): the softmax over positions of
the target class's channel, the head's estimate of the teacher's normalised ReLU(CAM), upsampled bilinearly to the
input as the teacher's Grad-CAM is.

Training (`train_head`): the student and the teacher frozen in eval mode, the teacher's maps and the student's
activations computed once over the training images and kept as tensors, then the head trained on that cache with
Adam, seeded. No augmentation: a new view would need new teacher and student passes every epoch, which is what
the cache saves on 2 CPU cores, while the head's few thousand weights on a fixed feature map overfit little.

Attached, never a part of the student (`attach_head`): a plain attribute outside the student's modules, so the
student's state dict, its file and its sha256 stay as they are wherever the student is saved, and `student.to()`
does not move the head (`attach_head` puts it on the student's device). It ships beside the student as
``student_evidence.pt`` (a float16 state dict) with ``student_evidence.json`` (`save_head`); `load_head` refuses a
head made for another student. ``python -m core.teacher_evidence DATASET`` trains one from the shipped checkpoints.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from torch import nn

from core.cam import all_class_maps, pooled_activation
from core.evidence_model import (FIRST_DESIGN, HEAD_DESIGNS, EvidenceHead, attach_head, check_fits, evidence_loss,
                                 evidence_targets, head_shape)
from core.hooks import preserve_model_state
from core.metadata import atomic_write_bytes, atomic_write_text, file_sha256, now_iso

__all__ = ["HEAD_FILE", "HEAD_META_FILE", "HEAD_EPOCHS", "HEAD_DESIGN", "attach_shipped_head", "ship_head",
           "shipped_pairs", "cache_training_pairs", "train_head", "fit_head", "save_head", "load_head", "main"]

HEAD_FILE, HEAD_META_FILE = "student_evidence.pt", "student_evidence.json"
# Epochs over the cached pairs; the head of the epoch with the lowest validation loss is kept (`train_head`). The
# first heads (8 epochs) were still learning when they stopped, on every dataset.
HEAD_EPOCHS = 40
HEAD_FORMAT = 1
HEAD_DESIGN = FIRST_DESIGN  # what `ship_head` trains (benchmarks/evidence_head.py chose it)


def cache_training_pairs(student: nn.Module, teacher: nn.Module, images: torch.Tensor,
                         teacher_images: torch.Tensor | None = None,
                         batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's pooled activations (N, C, h, w) and the teacher's targets (N, K, h, w) over ``images``, one
    forward of each model per image (``teacher_images``: the same images normalised for the teacher, if it
    differs). Both models are put in eval mode for the passes and left as found."""
    teacher_images = images if teacher_images is None else teacher_images
    if len(teacher_images) != len(images):
        raise ValueError(f"{len(images)} student images but {len(teacher_images)} teacher images")
    acts, targets = [], []
    with preserve_model_state(student), preserve_model_state(teacher):
        student.eval()
        teacher.eval()
        for start in range(0, len(images), batch_size):
            act, _, _ = pooled_activation(student, images[start:start + batch_size])
            maps = all_class_maps(teacher, teacher_images[start:start + batch_size])["maps"]
            acts.append(act)
            targets.append(evidence_targets(maps, tuple(act.shape[-2:])))
    return torch.cat(acts).clone(), torch.cat(targets).clone()  # ordinary tensors, no longer inference tensors


def train_head(student: nn.Module, teacher: nn.Module, images: torch.Tensor, *, epochs: int = 8,
               batch_size: int = 64, lr: float = 1e-3, seed: int = 0, hidden: int | None = None,
               design: str = FIRST_DESIGN, teacher_images: torch.Tensor | None = None,
               on_epoch: Callable[[int, float], None] | None = None,
               val_images: torch.Tensor | None = None, val_teacher_images: torch.Tensor | None = None,
               on_val: Callable[[int, float], None] | None = None) -> tuple[EvidenceHead, list[float]]:
    """Train an `EvidenceHead` for ``student`` on the teacher's maps of the training ``images`` (normalised
    (N, 3, H, W) for the student; `cache_training_pairs`), then `fit_head` on the cached pairs (and on
    ``val_images``'s, held out from training, when given)."""
    if len(images) == 0:
        raise ValueError("need some images to train an evidence head on")
    classes = head_shape(student)[1]
    if head_shape(teacher)[1] != classes:
        raise ValueError(f"the teacher has {head_shape(teacher)[1]} classes, the student {classes}")
    pairs = cache_training_pairs(student, teacher, images, teacher_images, batch_size)
    held_out = None if val_images is None else \
        cache_training_pairs(student, teacher, val_images, val_teacher_images, batch_size)
    return fit_head(pairs, held_out, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, hidden=hidden,
                    design=design, on_epoch=on_epoch, on_val=on_val)


def fit_head(pairs: tuple[torch.Tensor, torch.Tensor], held_out: tuple[torch.Tensor, torch.Tensor] | None = None, *,
             epochs: int = 8, batch_size: int = 64, lr: float = 1e-3, seed: int = 0, hidden: int | None = None,
             design: str = FIRST_DESIGN, on_epoch: Callable[[int, float], None] | None = None,
             on_val: Callable[[int, float], None] | None = None) -> tuple[EvidenceHead, list[float]]:
    """Train a head of ``design`` on cached (activations, targets) ``pairs`` (`cache_training_pairs`) with Adam.

    Seeded (initialisation and order), the global random state untouched; ``on_epoch(epoch, mean loss)`` after
    each epoch. With ``held_out`` pairs, their loss is measured after every epoch (``on_val(epoch, loss)``) and the
    head of the epoch with the lowest one is returned: more epochs then cost time, never a head that has begun to
    fit its training maps' noise. Returns the head in eval mode and the mean training loss of each epoch.
    """
    acts, targets = pairs
    if epochs < 1 or batch_size < 1 or len(acts) == 0:
        raise ValueError(f"need epochs and batch_size of at least 1 and some images, got {epochs}, {batch_size}, "
                         f"{len(acts)} images")
    history: list[float] = []
    best: tuple[float, dict] | None = None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = EvidenceHead(acts.shape[1], targets.shape[1], hidden, design)
        order = torch.Generator().manual_seed(seed)
        optimiser = torch.optim.Adam(head.parameters(), lr=lr)
        head.train()
        for epoch in range(1, epochs + 1):
            total = 0.0
            for batch in torch.randperm(len(acts), generator=order).split(batch_size):
                loss = evidence_loss(head(acts[batch]), targets[batch])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * len(batch)
            history.append(total / len(acts))
            if on_epoch is not None:
                on_epoch(epoch, history[-1])
            if held_out is not None:
                with torch.no_grad():
                    val_loss = float(evidence_loss(head.eval()(held_out[0]), held_out[1]))
                head.train()
                if on_val is not None:
                    on_val(epoch, val_loss)
                if best is None or val_loss < best[0]:
                    best = (val_loss, {k: v.detach().clone() for k, v in head.state_dict().items()})
    if best is not None:
        head.load_state_dict(best[1])
    return head.eval(), history


def save_head(head: EvidenceHead, path: str | Path, *, student_file: str | Path, teacher_file: str | Path,
              seed: int, epochs: int, history: list[float], classes: list[str] | None = None,
              images: int | None = None, val_history: list[float] | None = None) -> Path:
    """Write the head (float16 state dict) and its metadata beside it (``.json``), each atomically; returns the
    weights path. The sha256 of the student's and the teacher's files say which pair it was trained for."""
    from core.checkpoints import library_versions  # its torchvision import is needed only here

    path = Path(path)
    meta = {"format": HEAD_FORMAT, "classes": list(classes) if classes is not None else None,
            "num_classes": head.classes, "channels": head.channels, "hidden": head.hidden, "design": head.design,
            "student_sha256": file_sha256(student_file), "teacher_sha256": file_sha256(teacher_file),
            "seed": int(seed), "epochs": int(epochs), "images": images, "loss_history": [float(v) for v in history],
            **({"val_loss_history": [float(v) for v in val_history],
                "kept_epoch": 1 + min(range(len(val_history)), key=val_history.__getitem__)} if val_history else {}),
            "weights_dtype": "float16", "created": now_iso(), "versions": library_versions()}
    state = {k: v.detach().half().cpu().clone() for k, v in head.state_dict().items()}
    atomic_write_bytes(path, lambda handle: torch.save(state, handle))
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=1))
    return path


def _whole(meta: dict, name: str) -> int:
    value = meta.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"evidence head metadata: {name} must be a whole number of at least 1, got {value!r}")
    return value


def load_head(path: str | Path, student: nn.Module, *, student_file: str | Path | None = None) -> EvidenceHead:
    """The head saved at ``path`` (`save_head`), float32, eval mode, for ``student`` (attach it with `attach_head`).

    ``student_file``: the student's checkpoint, whose sha256 must be the one the head was trained for (default:
    ``student.pt`` beside the head, where it ships).

    Raises:
        ValueError: naming the field: unreadable metadata, a head for other classes or channels, or for another
            student file (its sha256); weights that are not this head's state dict, or not finite.
    """
    path = Path(path)
    try:
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path.with_suffix('.json')}: evidence head metadata unreadable ({err})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path.with_suffix('.json')}: evidence head metadata must be a JSON object")
    channels, classes, hidden = (_whole(meta, name) for name in ("channels", "num_classes", "hidden"))
    design = meta.get("design", FIRST_DESIGN)
    if not isinstance(design, str) or design not in HEAD_DESIGNS:
        raise ValueError(f"{path.with_suffix('.json')}: evidence head metadata: design must be one of "
                         f"{', '.join(HEAD_DESIGNS)}, got {design!r}")
    check_fits(student, channels, classes, f"{path}")
    student_file = Path(student_file) if student_file is not None else path.parent / "student.pt"
    if not student_file.is_file() or file_sha256(student_file) != meta.get("student_sha256"):
        raise ValueError(f"{path}: student_sha256 {meta.get('student_sha256')!r} is not the sha256 of {student_file}:"
                         " the head was trained for another student (retrain it)")
    head = EvidenceHead(channels, classes, hidden, design)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        head.load_state_dict({k: v.float() for k, v in state.items()})
    except Exception as err:  # a corrupt file, a pickle with code, other tensors: all unusable
        raise ValueError(f"{path}: weights are not an evidence head's state dict ({type(err).__name__})") from None
    if not all(torch.isfinite(v).all() for v in head.state_dict().values()):
        raise ValueError(f"{path}: the head has non-finite weights (NaN or inf); retrain it")
    return head.eval()


def attach_shipped_head(student: nn.Module, student_file: str | Path) -> str | None:
    """Attach the head shipped beside ``student_file`` (``student_evidence.pt``), if one is there; returns None, or
    the one-line reason a head that is there was not attached (made for another student, unreadable): the student
    still explains with every other method, and the reason says how to make a fitting head."""
    path = Path(student_file).parent / HEAD_FILE
    if Path(student_file).name != "student.pt" or not path.is_file():
        return None
    try:
        attach_head(student, load_head(path, student, student_file=student_file))
    except ValueError as err:
        return f"{err}; `python -m core.teacher_evidence DATASET --force` trains a fitting one"
    return None


def _training_images(meta, root: str | None, split: str = "train") -> torch.Tensor:
    """The training split a checkpoint was trained on (validation images carved out as in training), or that
    validation split, normalised."""
    from core.evaluate import evaluation_split
    from core.inference import batch_for

    return batch_for(meta, evaluation_split(meta, split, root=root).images)


class ShippedPairs(NamedTuple):
    """What a head for a dataset's shipped student is trained on (`shipped_pairs`)."""

    student_file: Path
    teacher_file: Path
    classes: list[str]
    pairs: tuple[torch.Tensor, torch.Tensor]  # the training split's (activations, targets)
    held_out: tuple[torch.Tensor, torch.Tensor]  # the validation split's, which choose the epoch


def shipped_pairs(folder: str | Path, root: str | None = None) -> ShippedPairs:
    """The cached training pairs of the shipped student and teacher in a dataset's checkpoint ``folder``: one pass
    of each model over the training and the validation split (`cache_training_pairs`)."""
    from core import checkpoints
    from core.layout import checkpoint_file
    from core.roles import DISTILLED, TEACHER

    student_file, teacher_file = checkpoint_file(Path(folder), DISTILLED), checkpoint_file(Path(folder), TEACHER)
    student, meta = checkpoints.load(student_file)
    teacher, teacher_meta = checkpoints.load(teacher_file, meta.classes)
    same = (teacher_meta.input_size, teacher_meta.mean, teacher_meta.std) == (meta.input_size, meta.mean, meta.std)
    pairs = [cache_training_pairs(student, teacher, _training_images(meta, root, split),
                                  None if same else _training_images(teacher_meta, root, split))
             for split in ("train", "val")]
    return ShippedPairs(student_file, teacher_file, list(meta.classes), pairs[0], pairs[1])


def ship_head(folder: str | Path, *, root: str | None = None, epochs: int = HEAD_EPOCHS, seed: int = 0,
              design: str = HEAD_DESIGN, force: bool = False,
              on_epoch: Callable[[int, float], None] | None = None) -> tuple[Path, Path | None]:
    """Train the evidence head from the shipped teacher and student in a dataset's checkpoint ``folder`` on their
    training split and ship it beside the student; returns (the head's path, the folder the head it replaced is kept
    in, or None). The stage of `core.reproduce` that follows the students. A head takes minutes (one pass of each
    model over the training images, then epochs over the cached pairs), so an interrupted one is trained again.

    Raises:
        core.shipping.ShippingRefused: a head is shipped there and ``force`` is not set (nothing trained).
    """
    from core import shipping

    folder = Path(folder)
    head_path = folder / HEAD_FILE
    if head_path.is_file() and not force:
        raise shipping.ShippingRefused(f"{head_path}: not replaced, an evidence head is shipped there. Pass --force "
                                       "to replace it anyway; the replaced files are kept under earlier/.")
    data = shipped_pairs(folder, root)
    val_history: list[float] = []
    head, history = fit_head(data.pairs, data.held_out, epochs=epochs, seed=seed, design=design, on_epoch=on_epoch,
                             on_val=lambda epoch, loss: val_history.append(loss))
    kept = shipping.keep_replaced(folder, [HEAD_FILE, HEAD_META_FILE])
    path = save_head(head, head_path, student_file=data.student_file, teacher_file=data.teacher_file, seed=seed,
                     epochs=epochs, history=history, classes=data.classes, images=len(data.pairs[0]),
                     val_history=val_history)
    return path, kept


def main(argv: list[str] | None = None) -> None:
    """``python -m core.teacher_evidence DATASET``: train the evidence head from the dataset's shipped teacher and
    student on its training split and ship it beside the student (an existing head only with ``--force``, kept
    under ``earlier/``)."""
    from core import shipping
    from core.arguments import RUN_FAILURES, failure_line, integer
    from core.layout import checkpoint_root, dataset_folder

    parser = argparse.ArgumentParser(prog="python -m core.teacher_evidence", description=main.__doc__)
    parser.add_argument("dataset")
    parser.add_argument("--checkpoints", default=None, help="checkpoint root (default: the shipped checkpoints)")
    parser.add_argument("--root", default=None, help="data root of the real datasets")
    parser.add_argument("--epochs", type=integer(1, 1000), default=HEAD_EPOCHS,
                        help="epochs; the one with the lowest validation loss is kept (default %(default)s)")
    parser.add_argument("--seed", type=integer(0, 2**32 - 1), default=0, help="default %(default)s")
    parser.add_argument("--design", choices=HEAD_DESIGNS, default=HEAD_DESIGN,
                        help="what the head is made of (default %(default)s; benchmarks/evidence_head.py "
                             "compares them)")
    parser.add_argument("--threads", type=integer(1, 256), default=None)
    parser.add_argument("--force", action="store_true", help="replace a shipped head (kept under earlier/)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = dataset_folder(args.dataset, root=args.checkpoints or checkpoint_root())
    print(f"{args.dataset}: one pass of each model over the training images, then {args.epochs} epochs")
    try:
        path, kept = ship_head(folder, root=args.root, epochs=args.epochs, seed=args.seed, design=args.design,
                               force=args.force,
                               on_epoch=lambda e, loss: print(f"epoch {e}: loss {loss:.4f}"))
    except shipping.ShippingRefused as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    except RUN_FAILURES as err:
        parser.exit(1, f"{parser.prog}: {failure_line(err)}\n")
    print(f"wrote {path}" + (f" (the earlier head is kept in {kept})" if kept else ""))


if __name__ == "__main__":
    main()
