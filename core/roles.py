"""The models a recipe trains, by role: one table of every name each role goes by.

One set of models is named in four places: its run folder (``label_only_s0``), its shipped file
(``student_label_only.pt``), its key in ``results.json`` (``label_only``) and the label people read. Each row
here holds all four, so code asks the table instead of spelling a name. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Role:
    """One model of the recipe.

    Attributes:
        key: its name in code and in ``results.json`` (``summary``, ``paired``): teacher, student, label_only,
            smoothing.
        kind: the architecture family it is (``teacher`` or ``student``), as its metadata's ``role`` says.
        stage_prefix: its run folder's name, ``<prefix>_s<seed>`` for a student (the teacher has no seed).
        shipped: the stem of its shipped checkpoint (``checkpoints/<dataset>/<shipped>.pt``), and its key in the
            app's URLs and charts; None for a control trained and scored over seeds but not shipped.
        label: what the pages and charts call it. short: the same in a table column.
        noun: how the results' prose and tables (`core.results`) name it.
    """

    key: str
    kind: str
    stage_prefix: str
    shipped: str | None
    label: str
    short: str
    noun: str

    def stage(self, seed: int | None = None) -> str:
        """Run-folder name of this role's stage (``label_only_s0``; the teacher's is ``teacher``)."""
        return self.stage_prefix if self.kind == "teacher" else f"{self.stage_prefix}_s{seed}"


TEACHER = Role("teacher", "teacher", "teacher", "teacher", "Teacher", "Teacher", "teacher")
DISTILLED = Role("student", "student", "student", "student", "Student (distilled)", "Student", "distilled student")
LABEL_ONLY = Role("label_only", "student", "label_only", "student_label_only", "Student (labels only)",
                  "Label-only student", "label-only student")
SMOOTHING = Role("smoothing", "student", "smoothing", None, "Student (label smoothing)", "Label-smoothing student",
                 "label-smoothing student")

ROLES: tuple[Role, ...] = (TEACHER, DISTILLED, LABEL_ONLY, SMOOTHING)
# What `core.reproduce` ships as checkpoints (seed 0 of each student arm), in the order pages list them.
SHIPPED: tuple[Role, ...] = tuple(r for r in ROLES if r.shipped)
# The students trained beside the distilled one to show what distillation adds.
CONTROLS: tuple[Role, ...] = (LABEL_ONLY, SMOOTHING)
# Every student a recipe trains over seeds (the distilled one, then the controls): each summarised in results.json.
STUDENTS: tuple[Role, ...] = (DISTILLED, *CONTROLS)
# The two models the faithfulness study explains and scores against each other.
STUDIED: tuple[Role, ...] = (TEACHER, DISTILLED)
# Architecture families, the values of a checkpoint's metadata ``role``.
KINDS: tuple[str, ...] = ("teacher", "student")


def role(name: str) -> Role:
    """The role a results key or a shipped file stem names (a stage knows its role's key: `Stage.model`)."""
    for r in ROLES:
        if name in (r.key, r.shipped):
            return r
    raise KeyError(f"no model role is called {name!r}; roles: {', '.join(r.key for r in ROLES)}")
