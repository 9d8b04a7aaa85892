"""The Lesson's choices and sentences, from numbers made up here (`explorer.lesson_view`)."""

import math

import numpy as np

from core.study_answer import MapVerdict
from explorer import lesson_view as lv


def _probs(rows):
    return np.array(rows, dtype=np.float32)


def test_the_cases_are_a_sure_right_answer_the_surest_mistake_and_a_disagreement():
    labels = np.array([0, 1, 2, 1, 0])
    teacher = _probs([[0.6, 0.3, 0.1],   # right, 0.6
                      [0.1, 0.9, 0.0],   # right, 0.9
                      [0.7, 0.2, 0.1],   # wrong (says 0 at 0.7)
                      [0.05, 0.9, 0.05],  # right
                      [0.1, 0.85, 0.05]])  # wrong (says 1 at 0.85): the surest mistake
    student = _probs([[0.9, 0.05, 0.05],  # right, 0.9: the smaller of the two is the teacher's 0.6
                      [0.2, 0.8, 0.0],   # right, 0.8: min 0.8, the surest right answer of both
                      [0.1, 0.1, 0.8],   # says 2, the teacher 0: a disagreement, student at 0.8
                      [0.05, 0.95, 0.0],  # right, min 0.9 ... but the teacher 0.9 > 0.8 above
                      [0.05, 0.9, 0.05]])
    found = lv.choose_cases(labels, teacher, student)
    assert (found.n, found.teacher_wrong, found.disagreements) == (5, 2, 1)
    assert found.clear == 3  # min(0.9, 0.95) = 0.9 beats image 1's min(0.9, 0.8)
    assert found.hard == 4 and found.disagree == 2


def test_no_case_where_none_qualifies():
    labels = np.array([0, 1])
    right = _probs([[0.9, 0.1], [0.2, 0.8]])
    found = lv.choose_cases(labels, right, right)
    assert found.clear == 0 and found.hard is None and found.disagree is None
    wrong = _probs([[0.1, 0.9], [0.8, 0.2]])
    assert lv.choose_cases(labels, wrong, right).clear is None


def test_top_share_of_flat_peaked_and_empty_maps():
    assert math.isclose(lv.top_share(np.ones((10, 10))), 0.1)
    peaked = np.zeros((10, 10))
    peaked[2:4, 2:7] = 1.0  # 10 pixels: the brightest tenth holds it all
    assert math.isclose(lv.top_share(peaked), 1.0)
    assert math.isnan(lv.top_share(np.zeros((4, 4))))


def test_the_layers_sentence_says_who_narrows_down():
    both = lv.layers_sentences(7, "glioma", ("glioma", 0.95), ("glioma", 0.9),
                               {"teacher": (0.2, 0.5), "student": (0.3, 0.4)})
    assert "#7 is glioma" in both[0] and "95%" in both[0]
    assert "20%" in both[1] and "50%" in both[1] and "both narrow down" in both[1]
    neither = lv.layers_sentences(7, "glioma", ("glioma", 0.95), ("glioma", 0.9),
                                  {"teacher": (0.3, 0.2), "student": (0.3, 0.3)})[1]
    assert "neither narrows down" in neither
    one = lv.layers_sentences(7, "glioma", ("glioma", 0.95), ("glioma", 0.9),
                              {"teacher": (0.3, 0.2), "student": (0.3, 0.6)})[1]
    assert "only the student narrows down" in one


def test_the_distrust_sentences_name_the_images_and_their_counts():
    labels = np.array([0, 1, 1])
    teacher = _probs([[0.9, 0.1], [0.97, 0.03], [0.2, 0.8]])
    student = _probs([[0.8, 0.2], [0.4, 0.6], [0.3, 0.7]])
    found = lv.choose_cases(labels, teacher, student)
    first, second = lv.distrust_sentences(found, ["cat", "dog"], labels, teacher, student)
    assert "wrong on 1 of 3" in first and "On #1, dog, it says cat (97%)" in first
    assert "different classes on 1 of 3" in second and "#1" in second and "dog at 60%" in second
    all_right = lv.choose_cases(labels, student, student)
    first, second = lv.distrust_sentences(all_right, ["cat", "dog"], labels, student, student)
    assert "right on all 3" in first and "same class on all 3" in second


def test_the_evidence_sentences_say_why_there_is_no_matched_score():
    verdicts = {"the student's CAM": MapVerdict("better", 6, 0, 6),
                "the teacher's Grad-CAM": MapVerdict("better", 6, 0, 6),
                "the student's feature maps": MapVerdict("depends on how pixels are removed", 3, 2, 6)}
    first, second = lv.evidence_sentences(verdicts, None, 50, "phantom", head=True)
    # maps with one verdict are named together; the sentence starts with a capital, the rest as given
    assert "(50 phantom test images). The student's CAM and the teacher's Grad-CAM: better than" in first
    assert "; the student's feature maps: better than a random map as coarse as itself in 3 and worse in 2" in first
    assert "shipped after this study" in second and "core.faithfulness_study phantom" in second
    assert "No evidence head" in lv.evidence_sentences(verdicts, None, 50, "phantom", head=False)[1]


def test_the_maps_sentences_give_each_maps_passes_and_agreement():
    first, second = lv.maps_sentences("glioma", {"the teacher's Grad-CAM": (1, 1), "the student's map": (1, 0)},
                                      {"the student's map": 0.62})
    assert "glioma" in first and "1 forward and 1 backward pass;" in first
    assert "1 forward and 0 backward passes" in first
    assert "the student's map at 0.62" in second
