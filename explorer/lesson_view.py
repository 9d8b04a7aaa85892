"""The Lesson page's story for a class, on any dataset: six steps, each one picture and two sentences written from
the data shown (the shipped predictions, metrics, faithfulness study and timings, and the models run on the chosen
images), never from numbers typed here.

The examples come from the shipped test predictions (`choose_cases`): a clear case (both models right and sure), a
hard one (the teacher wrong, most confidently) and a disagreement (the two give different classes). The sentence
builders are pure functions of numbers; `draw` runs a step on the page.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import streamlit as st
import torch

from core import study_answer
from core.catalog import DATASETS, DatasetError
from core.explain import explain
from core.explainers import EXPLAINERS
from core.faithfulness import agreement
from core.roles import DISTILLED, TEACHER
from explorer import (benchmark_view, cached_plots, compare_view, faithfulness_view, feature_maps_view,
                      image_prediction, loaders, page_list, ui)
from explorer.loaders import LoadedModel
from explorer.names import method_label
from explorer.text import plain


@dataclass(frozen=True)
class Step:
    key: str  # what `draw` draws
    title: str
    page: str  # the page that shows the step's evidence in full (`explorer.page_list`)


STEPS = (Step("task", "The task and the two models", "compare"),
         Step("layers", "One image through both networks", "feature_maps"),
         Step("maps", "Explanations side by side", "explanations"),
         Step("evidence", "Is the student's map the teacher's evidence?", "faithfulness"),
         Step("speed", "How much faster is the student's map?", "timing"),
         Step("distrust", "What to distrust", "explanations"))
# The sentences at a size a class reads off a projector.
PROJECTOR_TYPE = "<style>.st-key-lesson_text p {font-size: 1.15rem; line-height: 1.4}</style>"
TOP = 0.1  # a map's brightest tenth of pixels: how much of its response sits there says how focused it is


@dataclass(frozen=True)
class Cases:
    """Test images chosen for the lesson (positions in the test split; None where no image qualifies)."""

    n: int  # test images the shipped predictions cover
    clear: int | None  # both right, the most sure (the higher the smaller of their probabilities of the truth)
    hard: int | None  # the teacher wrong, the most confidently
    disagree: int | None  # teacher and student give different classes, the student the most confidently
    teacher_wrong: int
    disagreements: int


def choose_cases(labels: np.ndarray, teacher: np.ndarray, student: np.ndarray) -> Cases:
    """`Cases` from the test labels (N,) and both models' probabilities (N, C); the first image wins a tie."""
    labels = np.asarray(labels)
    rows = np.arange(len(labels))
    t_pred, s_pred = teacher.argmax(1), student.argmax(1)
    both_right = (t_pred == labels) & (s_pred == labels)
    wrong, differ = t_pred != labels, t_pred != s_pred

    def best(where: np.ndarray, score: np.ndarray) -> int | None:
        return int(np.argmax(np.where(where, score, -np.inf))) if where.any() else None

    return Cases(len(labels), best(both_right, np.minimum(teacher[rows, labels], student[rows, labels])),
                 best(wrong, teacher.max(1)), best(differ, student.max(1)), int(wrong.sum()), int(differ.sum()))


def cases(dataset: str, found: dict | None = None) -> Cases | None:
    """The lesson's images of ``dataset`` from its shipped predictions (``found``: `loaders.shipped_predictions`, when
    the caller has them); None without predictions of both models."""
    found = found if found is not None else loaders.shipped_predictions(dataset)
    if not found or not {TEACHER.shipped, DISTILLED.shipped} <= set(found["probs"]):
        return None
    return choose_cases(found["labels"], found["probs"][TEACHER.shipped], found["probs"][DISTILLED.shipped])


def top_share(heat: np.ndarray, fraction: float = TOP) -> float:
    """Share of a map's total in its brightest ``fraction`` of pixels: ``fraction`` for a flat map, 1 for a map
    whose response is all in that many pixels; NaN for a map with nothing in it."""
    flat = np.sort(np.clip(np.asarray(heat, dtype=np.float64).ravel(), 0, None))[::-1]
    total = flat.sum()
    if not total > 0:
        return float("nan")
    return float(flat[:max(1, int(round(fraction * flat.size)))].sum() / total)


def _shown(text: str) -> str:
    """A class name or a modality inside a sentence shown as Markdown: a user's folder may name it anything."""
    return plain(text, limit=120)


def task_sentences(dataset: str, classes: list[str], n_test: int, arch: str, teacher_params: int,
                   student_params: int, verdict: str | None) -> tuple[str, str]:
    """What the models learnt to tell apart, how big they are, and which is right more often (``verdict``:
    `explorer.compare_view.answer`)."""
    info = DATASETS[dataset]
    names = ", ".join(_shown(c) for c in classes)  # a user's class folders and dataset.toml name them
    first = (f"{n_test} test images of {_shown(info.modality)}, {len(classes)} classes: {names}. The teacher "
             f"({arch}, {teacher_params / 1e6:.1f} million parameters) learnt them from the labels, the student "
             f"({student_params / 1e6:.2f} million, {teacher_params / student_params:.0f}x fewer) from the teacher's "
             "answers.")
    return first, verdict or "No test metrics are shipped with these checkpoints, so the lesson cannot say which "\
                             "model is right more often."


def layers_sentences(index: int, true_class: str, teacher: tuple[str, float], student: tuple[str, float],
                     shares: dict[str, tuple[float, float]]) -> tuple[str, str]:
    """The clear case's predictions, and whether each network's response narrows from its first layer to its last
    (``shares``: role -> `top_share` of its first and last layer's map)."""
    first = (f"Test image #{index} is {_shown(true_class)}: the teacher says {_shown(teacher[0])} "
             f"({teacher[1]:.0%}), the student {_shown(student[0])} ({student[1]:.0%}). Each panel: one layer's "
             "average feature map, bright where it responds.")
    (t_first, t_last), (s_first, s_last) = shares[TEACHER.shipped], shares[DISTILLED.shipped]
    said = (f"The brightest tenth of a map holds, of its response, {t_first:.0%} in the teacher's first layer and "
            f"{t_last:.0%} in its last (the student: {s_first:.0%}, then {s_last:.0%})")
    narrows = {"teacher": t_last > t_first, "student": s_last > s_first}
    if all(narrows.values()):
        return first, said + ": layer by layer, both narrow down to where they decide."
    if not any(narrows.values()):
        return first, said + ": neither narrows down; their last layers respond as widely as their first."
    who = next(name for name, yes in narrows.items() if yes)
    return first, said + f": only the {who} narrows down to where it decides."


def maps_sentences(class_name: str, passes: dict[str, tuple[int, int]], spearman: dict[str, float]) -> tuple[str, str]:
    """How each map is made (``passes``: map title -> forward and backward passes) and how alike the student's maps
    rank the pixels to the teacher's Grad-CAM on this image (``spearman``: map title -> rank correlation)."""
    made = "; ".join(f"{title}: {f} forward and {b} backward pass{'es' if b != 1 else ''}"
                     for title, (f, b) in passes.items())
    first = f"Each map explains the class {_shown(class_name)}. What each costs: {made}."
    alike = ", ".join(f"{title} at {r:.2f}" for title, r in spearman.items())
    return first, (f"On this image they rank the pixels like the teacher's Grad-CAM: {alike} (Spearman rank "
                   "correlation; 1 is the same order, 0 unrelated).")


def evidence_sentences(verdicts: dict[str, study_answer.MapVerdict], matched: study_answer.Matched | None,
                       n: int, dataset: str, head: bool) -> tuple[str, str]:
    """The study's verdicts on the teacher's score (``verdicts``: map description -> verdict), and the teacher's
    evidence read off the student against the teacher's own Grad-CAM where the study has both (``head``: whether
    the student has its evidence head now)."""
    by_phrase: dict[str, list[str]] = {}
    for label, verdict in verdicts.items():
        by_phrase.setdefault(verdict.phrase(), []).append(label)
    said = "; ".join(f"{_listed(labels)}: {phrase}" for phrase, labels in by_phrase.items())
    first = (f"Removing the pixels a map ranks first should lower the teacher's confidence faster than for a random "
             f"map ({n} {dataset} test images). {said[0].upper()}{said[1:]}.")
    if matched:
        return first, matched.sentence()
    if head:
        return first, ("The student's evidence head was shipped after this study: rerun `python -m "
                       f"core.faithfulness_study {dataset}` to score the teacher's evidence read off the student.")
    return first, "No evidence head is shipped with this student, so the study has no map trained to give the "\
                  "teacher's evidence."


def _listed(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def distrust_sentences(cases: Cases, classes: list[str], labels: np.ndarray, teacher: np.ndarray,
                       student: np.ndarray) -> tuple[str, str]:
    """The hard case and the disagreement in words (``teacher``, ``student``: their shipped probabilities)."""
    classes = [_shown(c) for c in classes]
    if cases.hard is None:
        first = (f"The teacher is right on all {cases.n} test images; even so, a map shows where a model looked, "
                 "not whether it was right.")
    else:
        i = cases.hard
        first = (f"The teacher is wrong on {cases.teacher_wrong} of {cases.n} test images. On #{i}, "
                 f"{classes[labels[i]]}, it says {classes[teacher[i].argmax()]} ({teacher[i].max():.0%}), and its "
                 "Grad-CAM (left) looks as sure as on a right answer: a map shows where a model looked, not whether it "
                 "was right.")
    if cases.disagree is None:
        second = (f"The student and the teacher give the same class on all {cases.n} images; an image unlike the "
                  "training images (another scanner, a photo) still gets a confident class: the app warns first.")
    else:
        j = cases.disagree
        second = (f"They give different classes on {cases.disagreements} of {cases.n} images (#{j}, right: the student"
                  f" says {classes[student[j].argmax()]} at {student[j].max():.0%}, the teacher "
                  f"{classes[teacher[j].argmax()]}); and an image unlike the training images still gets a confident "
                  "class: the app warns before it shows one.")
    return first, second


@st.cache_data(max_entries=64, show_spinner="Explaining the image ...")
def one_map(_loaded: LoadedModel, version: tuple, ident: str, _x: torch.Tensor, method: str,
            target: int) -> tuple[np.ndarray, tuple[int, int]]:
    """One map of one image at the model's input size, with its (forward, backward) passes."""
    with _loaded.lock:
        exp = explain(_loaded.model, _x, method, target, predict=False)
    return exp.heatmap, (exp.passes["forward"], exp.passes["backward"])


def _short(role: str, method: str) -> str:
    """A map's name short enough for a panel's title: "student: Feature maps"."""
    return f"{role}:\n{method_label(method, short=True)}"


def _parameters(loaded: LoadedModel) -> int:
    return sum(p.numel() for p in loaded.model.parameters())


def _picture_and_text(sentences: tuple[str, str]):
    """The step's two columns: the picture's (returned) and its sentences, in projector-size type."""
    picture, text = st.columns([3, 2], gap="large")
    with text.container(key="lesson_text"):
        for sentence in sentences:
            st.markdown(sentence)
    return picture


def further(step: Step, image: int | None = None, method: str | None = None) -> None:
    """A button to the page that shows the step's evidence in full (on the step's image, with its method)."""
    entry = page_list.page(step.page)
    if st.button(f"Open {entry.title}", key=f"lesson_open_{step.key}", icon=":material/open_in_new:"):
        if image is not None and method:
            ui.open_explanation(image, method)
        elif image is not None:
            ui.open_test_image(image)
        st.switch_page(entry.link)


def draw(step: Step, dataset: str, teacher: LoadedModel, student: LoadedModel) -> None:
    """Draw one step of the lesson (its title is drawn by the page)."""
    {"task": _task, "layers": _layers, "maps": _maps, "evidence": _evidence, "speed": _speed,
     "distrust": _distrust}[step.key](step, dataset, teacher, student)


def _no_images(dataset: str) -> bool:
    if loaders.images_available(dataset):
        return False
    st.info(f"This step's picture needs the {dataset} test images, which are not on this machine.",
            icon=":material/image_not_supported:")
    return True


def _chosen_or_none(dataset: str, index: int | None):
    if index is None or _no_images(dataset):
        return None
    try:
        return ui.test_image(dataset, index)
    except DatasetError as err:
        st.warning(f"Test image #{index} cannot be read ({plain(err)}).", icon=":material/broken_image:")
        return None


def _task(step, dataset, teacher, student):
    models = {TEACHER.shipped: teacher, DISTILLED.shipped: student}
    reports, pairs, _ = compare_view.reports(dataset, models, None)
    found = cases(dataset)
    n_test = found.n if found else next((r["n"] for r in reports.values() if r.get("n")), 0)
    picture = _picture_and_text(task_sentences(dataset, teacher.meta.classes, n_test, teacher.meta.arch,
                                               _parameters(teacher), _parameters(student),
                                               compare_view.answer(reports, pairs)))
    with picture:
        if not _no_images(dataset):
            examples = loaders.first_per_class(dataset, 1)
            for col, (label, (index,)) in zip(st.columns(len(examples)), sorted(examples.items())):
                col.image(loaders.thumbnail(dataset, index, side=256), caption=teacher.meta.classes[label],
                          width="stretch")
        further(step)


def _layers(step, dataset, teacher, student):
    found = cases(dataset)
    index = found.clear if found else loaders.first_clear_image(dataset)
    chosen = _chosen_or_none(dataset, index)
    if chosen is None:
        return
    panels, shares, said = [], {}, {}
    for role, loaded in ((TEACHER.shipped, teacher), (DISTILLED.shipped, student)):
        x = chosen.model_input(loaded.meta)
        maps = feature_maps_view.all_layer_maps(loaded, loaded.version, chosen.ident, x)
        picks = sorted({0, len(maps["labels"]) // 2, len(maps["labels"]) - 1})
        pixels = chosen.pixels(loaded.meta.input_size)
        panels += [(pixels, maps["maps"][i], f"{role}: {maps['labels'][i]}") for i in picks]
        shares[role] = (top_share(maps["maps"][0]), top_share(maps["maps"][-1]))
        probs = maps["probabilities"]
        said[role] = (loaded.meta.classes[int(probs.argmax())], float(probs.max()))
    picture = _picture_and_text(layers_sentences(index, teacher.meta.classes[chosen.label], said[TEACHER.shipped],
                                                 said[DISTILLED.shipped], shares))
    with picture:
        ui.plot(cached_plots.overlay_grid(panels, max(len(panels) // 2, 1), height_per_row=165), "lesson_layers")
        further(step, index)


def _maps(step, dataset, teacher, student):
    found = cases(dataset)
    index = found.clear if found else loaders.first_clear_image(dataset)
    chosen = _chosen_or_none(dataset, index)
    if chosen is None:
        return
    xs = {TEACHER.shipped: chosen.model_input(teacher.meta), DISTILLED.shipped: chosen.model_input(student.meta)}
    # the class the teacher predicts, from the page-wide cached prediction (no layer hooks)
    target = int(image_prediction.probabilities(teacher, teacher.version, chosen.ident, xs[TEACHER.shipped]).argmax())
    wanted = [(teacher, "grad_cam", "the teacher's Grad-CAM"), (student, "feature_maps", "the student's feature map")]
    if EXPLAINERS["teacher_evidence"].can_explain(student.model):
        wanted.append((student, "teacher_evidence", "the teacher's evidence read off the student"))
    panels, passes, heat = [], {}, {}
    for loaded, method, title in wanted:
        heat[title], passes[title] = one_map(loaded, loaded.version, chosen.ident, xs[loaded.role], method, target)
        panels.append((chosen.pixels(loaded.meta.input_size), heat[title], _short(loaded.role, method)))
    reference = heat["the teacher's Grad-CAM"]
    spearman = {title: agreement(reference, h)["spearman"] for title, h in heat.items() if h is not reference}
    picture = _picture_and_text(maps_sentences(teacher.meta.classes[target], passes, spearman))
    with picture:
        ui.plot(cached_plots.overlay_grid(panels, len(panels), height_per_row=260), "lesson_maps")
        further(step, index, "feature_maps")


def _evidence(step, dataset, teacher, student):
    study, unreadable = faithfulness_view.shipped_study(loaders.results_json(dataset), f"{dataset}/results.json")
    if study is None:
        st.info(f"No faithfulness study is shipped for {dataset}"
                + (f" ({plain(unreadable)})" if unreadable else "") + ", so this step has no answer here.",
                icon=":material/science:")
        return
    verdicts = {label: v for method, role, label in study_answer.ASKED
                if (v := study_answer.map_verdict(study, method, role, TEACHER)) is not None}
    if not verdicts:
        st.markdown(plain(study_answer.answer(study)))
        return
    picture = _picture_and_text(evidence_sentences(verdicts, study_answer.evidence_versus_grad_cam(study),
                                                   study.images, dataset,
                                                   EXPLAINERS["teacher_evidence"].can_explain(student.model)))
    with picture:
        dists = faithfulness_view.distributions(study, "road_combined", "cross")
        own = faithfulness_view.distributions(study, "road_combined", "own")
        cross_label = faithfulness_view.curve_series(DISTILLED, TEACHER).label
        own_label = faithfulness_view.curve_series(TEACHER, TEACHER).label
        shown = {method: (dists if role == DISTILLED else own).get(cross_label if role == DISTILLED else own_label,
                                                                  {}).get(method)
                 for method, role, _ in study_answer.ASKED}
        shown["random"] = own.get(own_label, {}).get("random")
        labels = {method: _short(role.shipped, method).replace("\n", " ") for method, role, _ in study_answer.ASKED} | {
            "random": "random map (baseline)"}
        boxes = {"scored on the teacher's probability": {m: v for m, v in shown.items() if v}}
        ui.plot(cached_plots.score_boxes(boxes, labels, "ROAD, both orders", "higher", height=340), "lesson_evidence")
        further(step)


def _speed(step, dataset, teacher, student):
    shipped = benchmark_view.shipped_results(dataset)
    said = benchmark_view.answer(shipped["rows"]) if shipped else None
    if not said:
        st.info(f"No explainer timings are shipped for {dataset}; the Timing page measures them here.",
                icon=":material/timer:")
        further(step)
        return
    # the teacher's Grad-CAM against the student's one-pass maps and its own Grad-CAM
    rows = [r for r in shipped["rows"] if r["method"] == "grad_cam" or (r["model"] == DISTILLED.shipped and
                                                                      r["method"] in benchmark_view.STUDENT_MAPS)]
    env = shipped.get("environment") or {}
    where = f"{plain(env.get('cpu', 'an unnamed CPU'))} with {env.get('threads', '?')} threads"
    picture = _picture_and_text((said, f"Timed on {where}; the Timing page runs the same benchmark on the machine "
                                       "that serves this app."))
    with picture:
        ui.plot(cached_plots.timing_bars(rows, height=330), "lesson_speed")
        further(step)


def _distrust(step, dataset, teacher, student):
    found = loaders.shipped_predictions(dataset)
    chosen_cases = cases(dataset, found)
    if chosen_cases is None:
        st.info("This step needs the test predictions shipped with both models.", icon=":material/help:")
        return
    t_probs, s_probs = found["probs"][TEACHER.shipped], found["probs"][DISTILLED.shipped]
    panels = []
    for index, loaded, method in ((chosen_cases.hard, teacher, "grad_cam"),
                                  (chosen_cases.disagree, student, "feature_maps")):
        if index is None or not loaders.images_available(dataset):
            continue
        chosen = ui.test_image(dataset, index)
        probs = t_probs if loaded is teacher else s_probs
        target = int(probs[index].argmax())
        heat, _ = one_map(loaded, loaded.version, chosen.ident, chosen.model_input(loaded.meta), method, target)
        panels.append((chosen.pixels(loaded.meta.input_size), heat,
                       f"#{index} {_short(loaded.role, method)}\nfor {teacher.meta.classes[target]}"))
    picture = _picture_and_text(distrust_sentences(chosen_cases, teacher.meta.classes, found["labels"], t_probs,
                                                   s_probs))
    with picture:
        if panels:
            ui.plot(cached_plots.overlay_grid(panels, len(panels), height_per_row=260), "lesson_distrust")
        else:
            _no_images(dataset)
        further(step, chosen_cases.hard if chosen_cases.hard is not None else chosen_cases.disagree, "grad_cam")
