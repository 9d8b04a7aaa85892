"""The three models of a dataset, by role, with the labels every page and chart shows (no Streamlit here)."""

ROLE_LABELS = {"teacher": "Teacher", "student": "Student (distilled)", "student_label_only": "Student (labels only)"}
ROLES = tuple(ROLE_LABELS)  # checkpoint roles: <checkpoint root>/<dataset>/<role>.pt
# `core.reproduce` names the models in results.json (summary, split comparison) by these keys.
RESULTS_ROLES = {"teacher": "teacher", "student": "student", "label_only": "student_label_only"}


# Controls trained and scored over seeds but not shipped as checkpoints.
CONTROL_LABELS = {"smoothing": "Student (label smoothing)"}


def results_label(key: str) -> str:
    """Display label of a model named by its results.json key (teacher, student, label_only, smoothing)."""
    return CONTROL_LABELS[key] if key in CONTROL_LABELS else ROLE_LABELS[RESULTS_ROLES[key]]
