"""What the Teacher vs student page computes: architecture summaries, test-set predictions and reports, and the
tables it reads from the shipped ``results.json``'s record (seeds, paired differences, official vs pooled split).

The page loads the dataset's models once and passes them down. A cached function takes them as unhashed ``_``
arguments and is keyed by their versions (`explorer.loaders.LoadedModel.version`: role, path, modification
time), so Streamlit's cache reuses results across reruns and users without hashing tensors, and a rewritten
checkpoint is computed with again.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from core import predictions
from core.evaluate import latency_ms
from core.inference import batch_for, predict_tensor
from core.metrics import classification_report, never_predicted, pair_report
from core.results import split_gain, split_mismatch
from core.results_record import ResultsFileError, ShippedResults
from core.models import count_flops, count_parameters, feature_layers, layer_table
from core.layout import dataset_folder
from core.roles import DISTILLED, LABEL_ONLY, SMOOTHING, TEACHER
from explorer import loaders
from explorer.loaders import LoadedModel
from explorer.shipped_values import is_count, is_fraction, is_number, quoted
from explorer.text import plain


@st.cache_data(max_entries=16, show_spinner="Measuring the architecture ...")
def architecture(_loaded: LoadedModel, version: tuple) -> dict:
    """Layers, parameters, FLOPs and single-image latency of a model at its input size."""
    meta, model = _loaded.meta, _loaded.model
    size = meta.input_size
    test = shipped_test(meta)
    shipped = test["latency"]["median_ms"] if test and "latency" in test else None
    with _loaded.lock:
        flops = count_flops(model, size)
        layers = layer_table(model, size)
        if shipped is None:  # measured as core.evaluate stores it: median of 20 after 3 warm-ups
            latency, source = latency_ms(model, size)["median_ms"], "measured here"
        else:
            latency, source = float(shipped), "shipped with the checkpoint"
    return {"arch": meta.arch + (f" (depth {meta.arch_args['depth']})" if meta.arch_args.get("depth") else ""),
            "layers": len(feature_layers(model)), "parameters": count_parameters(model),
            "gflops": flops / 1e9, "latency_ms": latency, "latency_source": source,
            "input_size": size, "layer_rows": [
                {"layer": r["layer"], "output": " x ".join(map(str, r["output"])), "channels": r["output"][0],
                 "parameters": f"{r['parameters']:,}", "maps come from here": r["maps"]} for r in layers]}


@st.cache_data(max_entries=8, show_spinner="Predicting the test images ...")
def test_predictions(dataset: str, _models: dict[str, LoadedModel], versions: tuple, limit: int) -> dict:
    """Probabilities of each model (by role) and labels of about ``limit`` test images: the first
    ``limit // classes`` (at least one) of every class, in test-split order.

    ``versions`` (`loaders.model_versions` of ``_models``) keys the cache: a retrained checkpoint predicts again.
    """
    ds = loaders.split(dataset, "test")
    indices = sorted(loaders.spread_over_classes(dataset, limit))
    shas = {name: sha for name, sha in loaders.checkpoint_digests(dataset).items() if sha and name in _models}
    try:  # made with the checkpoints: rows of the same files, no model run at page load
        shipped = predictions.load(dataset_folder(dataset), shas, np.asarray(ds.targets), len(ds.classes)) or {}
    except predictions.PredictionsError:
        shipped = {}  # the models below predict instead; the file's problem does not stop the page
    rows, skipped = shipped.get("probs", {}), []
    if set(rows) != set(_models):  # some model predicts here: only the images that can be read
        images, indices, skipped = loaders.readable_items(dataset, indices)
    probs = {name: p[indices] for name, p in rows.items()}
    for name, loaded in _models.items():
        if name not in probs:
            with loaded.lock:
                probs[name] = predict_tensor(loaded.model, batch_for(loaded.meta, images))
    return {"indices": indices, "labels": np.array([int(ds.targets[i]) for i in indices]),
            "probs": {name: probs[name] for name in _models}, "skipped": skipped}


def prediction_limit(n_test: int) -> dict:
    """How many test images the Compare page predicts: slider settings, or only ``{"value": n}`` when the
    split is too small to offer a choice (a slider needs its minimum below its maximum)."""
    low, step = min(32, n_test), 4
    if n_test - low < step:
        return {"value": n_test}
    return {"min_value": low, "max_value": n_test, "value": min(128, n_test), "step": step}


def reports(dataset: str, models: dict[str, LoadedModel], preds: dict | None) -> tuple[dict, dict, str]:
    """Per-model reports and pair reports: shipped with the checkpoints (their metadata), else computed from
    ``preds``.

    Returns:
        ``(reports by role, pair reports by student role, source description)``.
    """
    shipped, pairs = {}, {}
    for name, loaded in models.items():
        test = shipped_test(loaded.meta)
        if test:
            shipped[name] = test
            if "vs_teacher" in test:
                pairs[name] = test["vs_teacher"]
    teacher, student = TEACHER.shipped, DISTILLED.shipped
    full = "shipped with the checkpoints (full test split)"
    if teacher in shipped and student in shipped and student in pairs:
        return shipped, pairs, full
    if not preds:  # the usable shipped reports, when the test images are not here to compute them all
        return (shipped, pairs, full) if shipped else ({}, {}, "")
    classes = loaders.split(dataset, "test").classes
    computed = {name: _report(p, preds["labels"], tuple(classes)) for name, p in preds["probs"].items()}
    pairs = {name: pair_report(preds["labels"], preds["probs"][teacher], p, classes)
             for name, p in preds["probs"].items() if name != teacher and teacher in preds["probs"]}
    return computed, pairs, f"computed here on {len(preds['labels'])} test images"


def answer(reports: dict[str, dict], pairs: dict[str, dict], level: float = 0.05) -> str | None:
    """Which model is right more often, by how much and how sure (McNemar's test on the images where only one is
    right), and how often they agree, in words; None without both models' reports and their pair report."""
    teacher, student = reports.get(TEACHER.shipped), reports.get(DISTILLED.shipped)
    pair = pairs.get(DISTILLED.shipped)
    if not teacher or not student or not pair or not isinstance(pair.get("mcnemar"), dict):
        return None
    p_value, n = pair["mcnemar"]["p_value"], teacher.get("n") or student.get("n")
    of = f" of {n} test images" if n else ""

    def pct(rep: dict) -> str:
        low, high = rep.get("accuracy_ci") or (None, None)
        return f"{rep['accuracy']:.1%}" + (f" ({100 * low:.1f}-{high:.1%})" if low is not None else "")

    test = "McNemar's test on the images where only one of them is right"
    if p_value < level and teacher["accuracy"] != student["accuracy"]:
        ordered = [(teacher, "The teacher", "the teacher's"), (student, "The distilled student",
                                                                  "the distilled student's")]
        (first, first_name, _), (second, _, second_name) = sorted(ordered, key=lambda m: -m[0]["accuracy"])
        said = (f"{first_name} is right more often: {pct(first).replace(' (', of + ' (95% CI ', 1)} against "
                f"{second_name} {pct(second)}, {100 * abs(first['accuracy'] - second['accuracy']):.1f} points; {test} "
                f"shows the difference (p = {p_value:.2g}).")
    else:
        said = (f"No difference shown: the teacher is right on {pct(teacher).replace(' (', of + ' (95% CI ', 1)}, "
                f"the distilled student on {pct(student)}; {test} does not show one (p = {p_value:.2g}).")
    return said + f" They give the same class on {pair['agreement']:.1%} of them."


def shipped_test(meta) -> dict | None:
    """A checkpoint's shipped test report (``metrics.test``), or None when it has none or one the page cannot use
    (`unusable_metrics` says why)."""
    test = meta.metrics.get("test")
    return test if test and not metrics_problem(test, meta.classes) else None


def unusable_metrics(models: dict[str, LoadedModel]) -> dict[str, str]:
    """Why each model's shipped test report cannot be used, by role (models without one, or a usable one, absent)."""
    found = {name: metrics_problem(loaded.meta.metrics.get("test"), loaded.meta.classes)
             for name, loaded in models.items() if loaded.meta.metrics.get("test")}
    return {name: problem for name, problem in found.items() if problem}


# The report's fields the page draws, each a share between 0 and 1 (the Brier score of a multi-class forecast is
# between 0 and 2).
FRACTIONS = ("accuracy", "balanced_accuracy", "macro_precision", "macro_recall", "macro_f1", "ece", "mce")


def metrics_problem(test, classes) -> str:
    """What makes a shipped test report (`core.metrics.classification_report` plus ``latency`` and ``vs_teacher``,
    as `core.evaluate` writes it) unusable for a model of ``classes``: "" when nothing does. The metadata check
    accepts any object there, and one odd value would otherwise break the page's tables and charts."""
    if not isinstance(test, dict):
        return f"metrics.test: {quoted(test)} is not an object"
    k = len(classes)
    if test.get("classes") != list(classes):
        return f"classes: {quoted(test.get('classes'))} are not the model's classes"
    checks = [(key, test.get(key), is_fraction) for key in FRACTIONS]
    checks += [("brier", test.get("brier"), lambda v: is_number(v) and 0 <= v <= 2),
               ("n", test.get("n"), lambda v: is_count(v) and v > 0),
               ("confusion_matrix", test.get("confusion_matrix"), lambda v: _table(v, k, k, is_count))]
    checks += [(key, test.get(key), lambda v: v is None or _table([v], 1, 2, is_fraction))
               for key in ("accuracy_ci", "macro_f1_ci")]
    per_class = test.get("per_class")
    checks.append(("per_class", per_class, lambda v: isinstance(v, dict)))
    checks += [(f"per_class.{key}", (per_class or {}).get(key) if isinstance(per_class, dict) else None,
                lambda v: _table([v], 1, k, is_fraction)) for key in ("recall", "f1")]
    checks.append(("reliability", test.get("reliability"), _reliability))
    if "latency" in test:
        checks.append(("latency", test["latency"], lambda v: isinstance(v, dict) and is_number(v.get("median_ms"))
                       and v["median_ms"] > 0))
    if "vs_teacher" in test:
        checks.append(("vs_teacher", test["vs_teacher"], lambda v: isinstance(v, dict)))
        pair = test["vs_teacher"] if isinstance(test["vs_teacher"], dict) else {}
        checks += [("vs_teacher.agreement", pair.get("agreement"), is_fraction),
                   ("vs_teacher.kl_divergence", pair.get("kl_divergence"), lambda v: is_number(v) and v >= 0),
                   ("vs_teacher.mcnemar", pair.get("mcnemar"),
                    lambda v: isinstance(v, dict) and is_fraction(v.get("p_value"))),
                   ("vs_teacher.flip_table", pair.get("flip_table"), lambda v: isinstance(v, dict) and all(
                       is_count(v.get(f)) for f in FLIPS))]
    for key, value, fits in checks:
        if not fits(value):
            return f"{key}: {quoted(value)} does not fit a test report" if value is not None else f"{key} is missing"
    return ""


FLIPS = ("both_right", "both_wrong", "teacher_right_student_wrong", "teacher_wrong_student_right")


def _table(rows, n_rows: int, n_columns: int, fits) -> bool:
    """Whether ``rows`` is ``n_rows`` lists of ``n_columns`` values that each fit."""
    return (isinstance(rows, list) and len(rows) == n_rows
            and all(isinstance(r, list) and len(r) == n_columns and all(map(fits, r)) for r in rows))


def _reliability(value) -> bool:
    """The reliability curve's bins: confidence, accuracy and count per bin (an empty bin has no confidence)."""
    if not isinstance(value, dict):
        return False
    columns = [value.get(key) for key in ("mean_confidence", "accuracy", "count")]
    return (all(isinstance(c, list) for c in columns) and len({len(c) for c in columns}) == 1
            and all(c is None or (is_fraction(c) and is_fraction(a) and is_count(n)) for c, a, n in zip(*columns)))


def _report(probs: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]) -> dict:
    return classification_report(probs, labels, list(classes), n_boot=200, seed=0)


def disagreements(preds: dict, confident: float = 0.8) -> dict[str, list[int]]:
    """Test positions where teacher and student disagree, and where the student is confidently wrong."""
    t, s = preds["probs"][TEACHER.shipped], preds["probs"][DISTILLED.shipped]
    y = preds["labels"]
    s_pred, s_conf = s.argmax(1), s.max(1)
    disagree = np.flatnonzero(t.argmax(1) != s_pred)
    wrong = np.flatnonzero((s_pred != y) & (s_conf >= confident))
    return {"disagree": disagree[np.argsort(-s_conf[disagree])].tolist(),
            "confidently_wrong": wrong[np.argsort(-s_conf[wrong])].tolist()}


def metrics_table(reports: dict[str, dict], labels: dict[str, str]) -> list[dict]:
    """Rows = metrics, one column per model, intervals in brackets where the report has them."""
    def cell(rep, key, ci_key=None, pct=True):
        fmt = (lambda v: f"{v:.1%}") if pct else (lambda v: f"{v:.3f}")
        ci = rep.get(ci_key) if ci_key else None
        return fmt(rep[key]) + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "")

    spec = [("Accuracy", "accuracy", "accuracy_ci", True), ("Macro F1", "macro_f1", "macro_f1_ci", True),
            ("Balanced accuracy", "balanced_accuracy", None, True), ("Macro precision", "macro_precision", None, True),
            ("Macro recall", "macro_recall", None, True), ("ECE, 15 bins (lower is better)", "ece", None, False),
            ("MCE", "mce", None, False), ("Brier score (lower is better)", "brier", None, False)]
    rows = [{"metric": name, **{labels[r]: cell(rep, key, ci, pct) for r, rep in reports.items()}}
            for name, key, ci, pct in spec]
    classes = next(iter(reports.values()))["classes"] if reports else []
    rows += [{"metric": f"Recall: {name}", **{labels[r]: f"{rep['per_class']['recall'][i]:.1%}"
                                              for r, rep in reports.items()}} for i, name in enumerate(classes)]
    rows.append({"metric": "Test images", **{labels[r]: str(rep["n"]) for r, rep in reports.items()}})
    return rows


def never_predicted_notes(reports: dict[str, dict], labels: dict[str, str]) -> list[str]:
    """One warning per model that never predicts a class present in the test split (Markdown: class names, which
    shipped metrics carry, are escaped)."""
    notes = []
    for name, rep in reports.items():
        missing = never_predicted(rep["confusion_matrix"], rep["classes"])
        if missing:
            notes.append(f"{labels[name]} never predicts {plain(', '.join(missing))}: its accuracy hides that; "
                         f"see its balanced accuracy and the recall rows.")
    return notes


def shipped_results(dataset: str, protocol: str = "official") -> tuple[ShippedResults | None, str | None]:
    """The results `core.reproduce` shipped for one split (`explorer.loaders.results`), or None with the reason its
    file cannot be read (None when none is shipped)."""
    try:
        return loaders.results(dataset, protocol), None
    except ResultsFileError as e:
        return None, str(e)


SEED_COLUMNS = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro F1",
                "ece": "ECE", "agreement": "agreement with teacher"}


def seed_summary(results: ShippedResults | None) -> list[dict] | None:
    """Mean ± std over seeds of each student the results summarise (a metric a file lacks left out); None
    without results."""
    if results is None or not results.arms:
        return None
    rows = []
    for r in results.arms:
        spreads = {name: getattr(results.arm_summary(r), key) for key, name in SEED_COLUMNS.items()}
        rows.append({"model": r.label, **{name: f"{s.mean:.4f} ± {s.std:.4f}"
                                          for name, s in spreads.items() if s is not None}})
    return rows


# How the table names each control's paired comparison with the distilled student.
PAIRED_COMPARISONS = {LABEL_ONLY: "Distilled minus labels only", SMOOTHING: "Distilled minus label smoothing"}


def paired_differences(results: ShippedResults | None) -> tuple[list[dict], str] | None:
    """Test accuracy of the distilled student minus each control, paired by seed
    (`ShippedResults.paired_difference`, `core.stats.paired_difference`), in points with the 95% interval and
    both p-values; and the test's name. None when not shipped."""
    if results is None:
        return None
    found = {label: results.paired_difference(control, "accuracy") for control, label in PAIRED_COMPARISONS.items()}
    found = {label: d for label, d in found.items() if d is not None}
    if not found:
        return None
    rows = [{"comparison": label, "seeds": d.n, "difference (points)": 100 * d.mean,
             "95% CI (points)": f"{100 * d.ci[0]:+.2f} to {100 * d.ci[1]:+.2f}", "p (paired t-test)": d.p_value,
             "p (sign flip)": d.p_sign_flip} for label, d in found.items()]
    return rows, list(found.values())[-1].test


def split_comparison(official: ShippedResults | None, pooled: ShippedResults | None) -> list[dict] | str | None:
    """Test accuracy on the official split beside the paper's pooled random split (same recipe), when
    ``core.reproduce`` shipped both: `core.results.split_gain` with the app's labels. A sentence instead
    where the two ran with different budgets (their difference would not be the split's)."""
    if official is None or pooled is None:
        return None
    mismatch = split_mismatch(official, pooled)
    if mismatch:
        return (f"The pooled random split is not compared with the official split: their {mismatch}, so the "
                "difference would not be the split's alone.")
    try:
        rows = split_gain(official, pooled)
    except KeyError:  # a file without one of the three models' accuracies
        return None
    return [{"model": r.role.label, "official split": r.official, "pooled split": r.pooled,
             "gain from leakage (points)": r.gain_points,
             "seed std, official / pooled (points)": "–" if r.std_points is None
             else "{:.1f} / {:.1f}".format(*r.std_points)} for r in rows]
