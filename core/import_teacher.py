"""Import a model the user trained elsewhere as a dataset's teacher; ``python -m core.import_teacher``.

    python -m core.import_teacher --arch resnet50 --weights my_model.pth --data ~/my_xrays \\
        [--classes normal pneumonia] [--input-size 224] [--mean 0.485 0.456 0.406 --std 0.229 0.224 0.225]

The weights are a state dict of the torchvision architecture ``--arch`` with one output per class (a checkpoint
holding it under ``state_dict`` or ``model``, or saved from DataParallel with ``module.`` prefixes, is read too).
``--classes`` is the order of the model's outputs, by default the folder's class names in sorted order; another
order of the same names is taken by reordering the classifier's rows. ``--mean``/``--std`` are the normalisation
the model was trained with (default ImageNet's). The teacher is checked on the folder's test split and written
with its metadata to ``$KD_CHECKPOINTS/<name>/teacher.pt`` (a teacher already there is replaced only with
``--force``, and kept under ``earlier/``); then ``python -m core.train --data DIR --stage student --teacher
THAT_FILE`` distils its students like any other.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from core import checkpoints
from core.arguments import add_data_option, choose_dataset, integer, number
from core.catalog import data_root_of, get_info
from core.checkpoints import CheckpointMeta
from core.layout import checkpoint_file, dataset_folder
from core.models import TEACHERS, build_teacher
from core.roles import TEACHER
from core.shipping import keep_replaced

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class TeacherImportError(ValueError):
    """A model that cannot be imported as asked; the message says what to change."""


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (bare, or under ``state_dict``/``model``), ``module.`` prefixes removed."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle that is not weights, a truncated file: one clear message
        raise TeacherImportError(f"{path}: not a weights file torch can read safely ({type(err).__name__}: {err})") from err
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TeacherImportError(f"{path}: holds no state dict (a mapping of layer names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def output_layer(model: nn.Module, num_classes: int) -> nn.Linear:
    """The last linear layer, the one whose rows are the classes."""
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linear or linear[-1].out_features != num_classes:
        raise TeacherImportError(f"the model's last linear layer does not give {num_classes} outputs")
    return linear[-1]


def load_teacher(arch: str, weights: Path, classes: list[str], folder_classes: list[str]) -> nn.Module:
    """The user's model with its outputs in the folder's class order."""
    if sorted(classes) != sorted(folder_classes) or len(set(classes)) != len(classes):
        raise TeacherImportError(f"--classes {classes} are not the folder's classes {folder_classes} (each once)")
    try:
        model = build_teacher(arch, len(classes))
    except ValueError as err:
        raise TeacherImportError(str(err)) from None
    state = read_state(weights)
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise TeacherImportError(f"{weights}: non-finite weights in {', '.join(bad[:3])}")
    missing, unexpected = (sorted(set(model.state_dict()) - set(state)), sorted(set(state) - set(model.state_dict())))
    if missing or unexpected:
        raise TeacherImportError(f"{weights} is not a {arch} state dict: missing {missing[:3]}, unexpected {unexpected[:3]}"
                           f" ({len(missing)} and {len(unexpected)} in all)")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # the shapes differ: another class count, another width
        lines = str(err).splitlines()
        detail = next((line.strip() for line in lines if "size mismatch" in line), lines[0] if lines else "")
        raise TeacherImportError(f"{weights} does not fit {arch} with {len(classes)} classes: {detail}") from None
    if classes != folder_classes:  # reorder the classifier's rows into the folder's order
        head = output_layer(model, len(classes))
        order = torch.tensor([classes.index(c) for c in folder_classes])
        with torch.no_grad():
            head.weight.copy_(head.weight[order])
            if head.bias is not None:
                head.bias.copy_(head.bias[order])
    return model.eval()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.import_teacher", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", required=True, help=f"torchvision architecture, e.g. {', '.join(list(TEACHERS)[:4])}")
    parser.add_argument("--weights", required=True, type=Path, help="the model's state dict (.pt/.pth)")
    parser.add_argument("--dataset", default=None, help="a dataset name instead of --data")
    add_data_option(parser)
    parser.add_argument("--root", default=None, help="data root with --dataset")
    parser.add_argument("--classes", nargs="+", default=None, help="the model's outputs in order (default: sorted)")
    parser.add_argument("--input-size", type=integer(16, 1024), default=None,
                        help="the side the model was trained at (default: the dataset's)")
    parser.add_argument("--mean", type=number(-10, 10), nargs=3, default=list(IMAGENET_MEAN))
    parser.add_argument("--std", type=number(1e-6, 10), nargs=3, default=list(IMAGENET_STD))
    parser.add_argument("--force", action="store_true", help="replace a teacher already there (kept under earlier/)")
    parser.add_argument("--no-eval", action="store_true", help="skip the check on the test split")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    choose_dataset(parser, args)
    info = get_info(args.dataset, args.root)
    folder = dataset_folder(args.dataset)
    target = checkpoint_file(folder, TEACHER)
    if target.is_file() and not args.force:
        parser.error(f"{target} exists: pass --force to replace it (it is kept under earlier/)")
    try:
        model = load_teacher(args.arch, args.weights, args.classes or list(info.classes), list(info.classes))
    except TeacherImportError as err:
        parser.error(str(err))
    root = str(data_root_of(args.dataset, args.root))
    meta = CheckpointMeta(args.arch, len(info.classes), list(info.classes), args.input_size or info.input_size,
                          list(args.mean), list(args.std), role="teacher", dataset=args.dataset,
                          train={"imported_from": args.weights.name, "root": root, "data_seed": 0,
                                 "protocol": "official"},
                          notes=f"imported from {args.weights.name}")
    kept = keep_replaced(folder, ["teacher.pt", "teacher.json"]) if target.is_file() else None
    checkpoints.save(model, meta, target)
    print(f"the teacher is {target}" + (f" (the one it replaced: {kept})" if kept else ""))
    if not args.no_eval:
        from core.evaluate import evaluate_checkpoints, print_summary
        print_summary(evaluate_checkpoints({"teacher": target}, root=root, write=True))
    print(f"distil its students: python -m core.train --data {Path(root) / args.dataset} --stage student "
          f"--teacher {target} --input-size {meta.input_size} --baseline")


if __name__ == "__main__":
    main()
