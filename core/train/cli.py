"""``python -m core.train``: train a teacher and distil its students from the command line (`core.train` holds
the recipe's loop; this module turns options into a `core.recipe.TrainConfig`, refuses impossible ones with exit 2
before anything trains, and reports, evaluates and, for a user's dataset, puts the models where the app finds them).
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import MISSING, fields
from pathlib import Path

from core import checkpoints, distributed
from core.arguments import RUN_FAILURES, add_data_option, choose_dataset, failure_line, unwritable
from core.budgets import Budget
from core.catalog import VAL_CARVES, get_info
from core.data import data_fingerprint, load_dataset
from core.distill import LOSSES
from core.layout import dataset_folder
from core.models import TEACHERS
from core.recipe import SettingError, TrainConfig, default_stages
from core.roles import DISTILLED, LABEL_ONLY, TEACHER
from core.shipping import ShippingRefused, ship_models, user_run_destination
from core.train import TrainResult, run_stages

# Where the command line departs from the recipe's defaults, as the README tells its users: the label-only student
# comes with --baseline, and a run folder is continued only with --resume (without it, a stage trains afresh in its
# folder: the README's student with other loss settings lands in the folder of the default run).
COMMAND_LINE_DEFAULTS = {"label_only": False, "resume": False}


def _command_line_defaults() -> dict:
    """`TrainConfig`'s field defaults, read from the dataclass so that the two cannot drift, with its loss's
    ``alpha`` and ``temperature`` and the `COMMAND_LINE_DEFAULTS` on top."""
    recipe = {f.name: f.default if f.default_factory is MISSING else f.default_factory() for f in fields(TrainConfig)}
    return {**recipe, **LOSSES.defaults("kd"), **recipe["loss_args"], **COMMAND_LINE_DEFAULTS}


def distillation_losses() -> list[str]:
    """The registered losses a distilled student can take alone: those that read the teacher's logits (not its
    features, which `--attention-beta` adds)."""
    return [name for name in LOSSES if LOSSES.build(name).uses_teacher and not LOSSES.build(name).uses_features]


def loss_setting(text: str) -> tuple[str, float]:
    """``NAME=VALUE`` of ``--loss-arg``."""
    name, sep, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = None
    if not sep or not name.isidentifier() or number is None or not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"must be NAME=NUMBER, got {text!r}")
    return name, number


def build_parser() -> argparse.ArgumentParser:
    """The command line; an option that sets a `TrainConfig` field stores under the field's name."""
    d = _command_line_defaults()
    parser = argparse.ArgumentParser(
        prog="python -m core.train",
        description="Train a teacher, distil a student (and a label-only baseline), evaluate them on test.",
        epilog="Several processes, GPUs or machines: launch with torchrun, e.g. `torchrun --nproc_per_node 4 -m "
               "core.train ...` (DistributedDataParallel, nccl on GPUs, gloo on CPUs). --batch-size is per process "
               "(a step averages world size x --batch-size images), --lr is used as given (not scaled); rank 0 "
               "writes the checkpoints; --resume needs the same number of processes.")
    add = parser.add_argument
    add("--stage", choices=["teacher", "student", "both"], default="both",
        help="what to train (default: both, teacher first)")
    add("--dataset", default=d["dataset"],
        help="a built-in dataset, or the name of a folder of images under --root (default: %(default)s)")
    add_data_option(parser)
    add("--force", action="store_true", help="with a user's dataset: replace the models already in "
        "$KD_CHECKPOINTS/<name>/ even by a run with less training (they are kept under earlier/)")
    add("--root", default=d["root"], help="data root (default: $KD_DATA_ROOT, ../shared/datasets, ./data)")
    add("--out", default=None, help="run folder (default: runs/<dataset>)")
    add("--teacher-arch", default=d["teacher_arch"], choices=list(TEACHERS),
        help="teacher architecture (default: %(default)s)")
    add("--teacher", default=None, help="existing teacher checkpoint for --stage student")
    add("--pretrained-weights", default=None, help="local state dict to start the teacher from")
    add("--depth", type=int, default=d["depth"], help="student conv blocks, 3 to 8 (default: %(default)s)")
    add("--pooled-blocks", type=int, default=d["pooled_blocks"],
        help="student blocks ending in pooling, from the first (fewer: finer feature maps; default: %(default)s)")
    add("--epochs", dest="teacher_epochs", metavar="EPOCHS", type=int, default=d["teacher_epochs"],
        help="teacher epochs (default: %(default)s)")
    add("--student-epochs", type=int, default=d["student_epochs"], help="student epochs (default: %(default)s)")
    add("--batch-size", type=int, default=d["batch_size"],
        help="batch size per process under torchrun (default: %(default)s)")
    add("--lr", type=float, default=d["lr"], help="peak learning rate, AdamW, cosine decay (default: %(default)s)")
    add("--input-size", type=int, default=d["input_size"], help="square input size (default: the dataset's)")
    add("--alpha", type=float, default=d["alpha"],
        help="weight of the hard loss, 1 = label-only (default: %(default)s)")
    add("--temperature", type=float, default=d["temperature"], help="KD temperature T (default: %(default)s)")
    add("--loss", default=d["loss"], choices=distillation_losses(),
        help="the distilled student's loss: kd (Hinton), dkd (decoupled KD), dist (DIST) (default: %(default)s)")
    add("--loss-arg", type=loss_setting, action="append", default=[], metavar="NAME=NUMBER",
        help="another setting of --loss, e.g. beta=8 for dkd (repeatable; --temperature applies to every loss, "
             "--alpha to kd)")
    add("--attention-beta", type=float, default=d["attention_beta"],
        help="> 0 adds attention transfer (default: %(default)s)")
    add("--baseline", dest="label_only", action=argparse.BooleanOptionalAction, default=d["label_only"],
        help="also train the label-only student, alpha=1 (default: %(default)s)")
    add("--seeds", type=int, nargs="+", default=d["seeds"],
        help=f"student seeds, one run per seed and arm (default: {' '.join(map(str, d['seeds']))})")
    add("--protocol", choices=["official", "pooled"], default=d["protocol"],
        help="official split, or the paper's pooled random split, leaky (default: %(default)s)")
    add("--val-carve", choices=list(VAL_CARVES), default=d["val_carve"],
        help="validation: a seeded share of each class at random, or the outer slices of every scan of a slice "
             "dataset, found from the pixels (default: %(default)s)")
    add("--patience", type=int, default=d["patience"],
        help="students' early-stopping patience in epochs (default: %(default)s)")
    add("--max-per-class", type=int, default=d["max_per_class"], help="cap training images per class (default: none)")
    add("--threads", type=int, default=d["threads"], help="torch CPU threads (default: torch's)")
    add("--resume", action=argparse.BooleanOptionalAction, default=d["resume"],
        help="continue interrupted runs and reuse finished ones; off: a stage trains afresh (default: %(default)s)")
    add("--no-eval", action="store_true", help="skip the test-set evaluation at the end")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The recipe the parsed command line asks for: every option stored under a field's name sets that field."""
    names = {f.name for f in fields(TrainConfig)}
    loss_args = {"alpha": args.alpha, "temperature": args.temperature} if args.loss == "kd" else \
        {"temperature": args.temperature}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names},
                       loss_args={**loss_args, **dict(args.loss_arg)})


# What stops a run the command line reports in one line (exit 1) rather than a traceback: data it cannot read, a
# teacher checkpoint it cannot load, a file it cannot write (a full disk, a folder without permission, a looping
# link), a loss that diverged.
def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.stage == "student" and not args.teacher:
        parser.error("--stage student needs --teacher CKPT")
    choose_dataset(parser, args)
    try:
        cfg = config_from_args(args)
    except SettingError as err:  # refused before anything is trained or written
        parser.error(f"argument {_option(parser, err.setting)}: {err.reason}")
    target = _user_models_folder(parser, args, cfg)
    runs = Path(args.out or f"runs/{args.dataset}")
    if reason := unwritable(runs):
        parser.error(f"argument --out: cannot write the run folder {runs} ({reason})")
    distributed.init()
    main_process = distributed.is_main()
    logging.basicConfig(level=logging.INFO if main_process else logging.WARNING, format="%(message)s")
    stages = default_stages(cfg, teacher=args.stage != "student")
    if args.stage == "teacher":
        stages = stages[:1]
    try:
        teacher = checkpoints.load(args.teacher)[0] if args.stage == "student" else None
        results = run_stages(cfg, runs, stages, teacher=teacher, pretrained_weights=args.pretrained_weights)
    except RUN_FAILURES as err:
        parser.exit(1, f"{parser.prog}: error: {failure_line(err)}\n")
    finally:
        distributed.shutdown()
    if main_process:  # rank 0 reports and evaluates (writing the metrics into the metadata)
        _report(args, results)
        if target is not None:
            roles = {TEACHER: TEACHER.stage(), DISTILLED: DISTILLED.stage(cfg.seeds[0]),
                     LABEL_ONLY: LABEL_ONLY.stage(cfg.seeds[0])}
            kept = ship_models({r: results[n].path for r, n in roles.items() if n in results}, target)
            print(f"the app finds these models in {target}" + (f" (the ones they replaced: {kept})" if kept else ""))


def _user_models_folder(parser: argparse.ArgumentParser, args: argparse.Namespace, cfg: TrainConfig) -> Path | None:
    """``<checkpoint root>/<name>/`` for a user's dataset, decided before it trains: trained whole (teacher and
    students) by `core.shipping.user_run_destination`; students distilled from the teacher already there (an
    imported one, `core.import_teacher`) go beside it unless students are there (``--force`` replaces them). None
    for a built-in dataset (`core.reproduce` ships those) and for a teacher trained alone."""
    if not get_info(cfg.dataset, cfg.root).user or args.stage == "teacher":
        return None
    folder = dataset_folder(cfg.dataset)
    if args.stage == "student":
        if Path(args.teacher).resolve() != (folder / "teacher.pt").resolve():
            return None  # a teacher from elsewhere: its students stay in the run folder
        if (folder / "student.pt").is_file() and not args.force:
            parser.error(f"{folder} has a student already: pass --force to replace it (it is kept under earlier/)")
        return folder
    size = cfg.input_size or get_info(cfg.dataset, cfg.root).input_size
    budget = Budget(size, cfg.teacher_epochs, 0, cfg.student_epochs, max_per_class=cfg.max_per_class)
    fingerprint = lambda side: data_fingerprint(load_dataset(  # noqa: E731
        cfg.dataset, "train", root=cfg.root, input_size=side, seed=cfg.data_seed, val_fraction=cfg.val_fraction,
        val_carve=cfg.val_carve))
    try:
        return user_run_destination(folder, budget, fingerprint, args.force)
    except ShippingRefused as err:
        parser.error(str(err))


def _option(parser: argparse.ArgumentParser, setting: str) -> str:
    """The option that sets a `TrainConfig` field (or a loss argument), as the user typed it."""
    for action in parser._actions:
        if action.dest == setting and action.option_strings:
            return max(action.option_strings, key=len)
    return setting


def _report(args: argparse.Namespace, results: dict[str, TrainResult]) -> None:
    """The checkpoints written (--no-eval), else their test-set evaluation, written into their metadata."""
    paths = ({"teacher": Path(args.teacher)} if args.teacher else {}) | {n: r.path for n, r in results.items()}
    if args.no_eval:
        for name, path in paths.items():
            print(f"{name}: {path}")
        return
    from core.evaluate import evaluate_checkpoints, print_summary
    # the metrics go into this run's own checkpoints' metadata; a --teacher is paired with, never written to
    print_summary(evaluate_checkpoints(paths, root=args.root, write=True, written=set(results)))


if __name__ == "__main__":
    main()
