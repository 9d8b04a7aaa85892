"""What the command lines share: argument types (a value outside its range is refused by argparse before anything
runs, with exit 2 and one error line naming the option: ``argument --images: must be at least 1, got '0'``), and
the failures that stop a run, told in one line with exit 1."""

from __future__ import annotations

import argparse
import math
import tempfile
from collections.abc import Callable
from pathlib import Path

from core.catalog import DatasetError, get_info, register_folder
from core.checkpoints import CheckpointError, StateWriteError
from core.train_state import NonFiniteLoss

# What stops a run once it has begun: told as one line (`failure_line`) and exit 1, never a traceback.
RUN_FAILURES = (DatasetError, CheckpointError, NonFiniteLoss, OSError)


def integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """An ``int`` argument type of at least ``low`` (and at most ``high``)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {_range(low, high)}, got {text!r}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its own messages
    return parse


def number(low: float, high: float | None = None) -> Callable[[str], float]:
    """A finite ``float`` argument type of at least ``low`` (and at most ``high``): nan and inf are refused."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value) or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be a finite number {_range(low, high)}, got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


def _range(low: float, high: float | None) -> str:
    return f"at least {low:g}" if high is None else f"between {low:g} and {high:g}"


def unwritable(folder: Path) -> str:
    """Why the run folder cannot be written ("" when it can), found before anything trains."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        return err.strerror or str(err)
    return ""


def failure_line(err: Exception) -> str:
    """A run failure as one line: the message, with the file an operating-system error names."""
    if isinstance(err, OSError) and not isinstance(err, StateWriteError) and err.filename:
        return f"{err.filename}: {err.strerror or err}"
    return " ".join(str(err).split())


DATA_HELP = ("your own folder of images, DIR/<class>/<image> (a test split is carved) or DIR/{train,test}/<class>/<image>:"
             " the dataset is named after DIR and DIR's parent is the data root")


def add_data_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", metavar="DIR", default=None, help=DATA_HELP)


def choose_dataset(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Settle ``args.dataset`` (and ``args.root``) from a dataset name or ``--data DIR``, refusing with exit 2 and
    one line what names no usable dataset: an unknown name lists the known ones, a folder says what to change."""
    if getattr(args, "data", None):
        try:
            info = register_folder(args.data)
        except DatasetError as err:
            parser.error(f"argument --data: {err}")
        if args.dataset not in (None, info.name, parser.get_default("dataset")):
            parser.error(f"argument --data: the folder's dataset is {info.name!r}, not {args.dataset!r}: give one")
        args.dataset, args.root = info.name, str(Path(args.data).expanduser().resolve().parent)
        return
    if not args.dataset:
        parser.error("give a dataset name or --data DIR")
    try:
        get_info(args.dataset, getattr(args, "root", None))
    except DatasetError as err:
        parser.error(f"argument dataset: {err}")
