"""``python -m core.train`` (and ``torchrun -m core.train``): the command line of `core.train.cli`."""

from core.train.cli import main

main()
