"""Friendly names for what the app shows, and the glossary of the words its pages use (no Streamlit here).

Keys stay in code, URLs and files (``grad_cam``, ``student_label_only``); people read the names below. Every chart
legend, axis, table and menu goes through `label`, so no raw key reaches the screen.
"""

from __future__ import annotations

from core.roles import Role, role

# The timing benchmark's row of plain forward passes beside the methods (`core.bench`); not an explainer.
FORWARD_ROW = "Forward pass (prediction only)"


def method_label(method: str, short: bool = False) -> str:
    """The name of an explainer: its class's ``title`` in menus and headings, its ``short_title`` in legends and
    table columns (``short``); an unknown key as it is."""
    if short and method == "forward":
        return FORWARD_ROW
    from core.explainers import EXPLAINERS  # here: the page header's glossary (and so Home) runs without torch

    if method not in EXPLAINERS:
        return method
    explainer = EXPLAINERS[method]
    return (explainer.short_title or explainer.title) if short else explainer.title


def _role(key: str) -> Role | None:
    try:
        return role(key)
    except KeyError:
        return None


def role_label(key: str, short: bool = False) -> str:
    """The name of a model by its shipped file stem (``student_label_only``) or its results.json key (``label_only``):
    `core.roles.Role.label`, or ``short`` for table columns, where a header starts with the model (``Student
    deletion AUC``); an unknown key as it is."""
    found = _role(key)
    if found is None:
        return key
    return found.short if short else found.label


def label(key: str) -> str:
    """The name of any key a chart or table may carry: a model role, then a method; unknown keys as they are."""
    if _role(key) is not None:
        return role_label(key)
    return method_label(key, short=True)


# term -> (definition, where it comes from in the app). Written for a class: one or two plain sentences each.
GLOSSARY: dict[str, str] = {
    "Teacher": "The large model trained first (the paper's DenseNet121, about 7 million parameters, on the built-in "
               "datasets; any torchvision CNN on your own); accurate but hard to explain layer by layer.",
    "Student": "A small five-block convolutional network trained to imitate the teacher's outputs (knowledge "
               "distillation); its few layers are what the feature maps explain.",
    "Label-only student": "The same small network trained on the labels alone, without the teacher: the baseline "
                          "that shows what distillation adds.",
    "Knowledge distillation (KD)": "Training the student on the teacher's softened class probabilities as well as "
                                   "the labels. Alpha weighs the label loss against the teacher's; the temperature "
                                   "T softens the probabilities so that the second-best classes carry information.",
    "Stem": "The first layers of a network (a large convolution and pooling) that turn pixels into the first "
            "feature maps.",
    "Dense block": "A group of DenseNet layers in which every layer receives the feature maps of all layers before "
                   "it in the block.",
    "Transition": "The layer between two dense blocks of DenseNet: a 1x1 convolution and pooling that halve the "
                  "map size and reduce the channels.",
    "Feature map": "What one channel of a layer computes at each place of the image; the average feature map of a "
                   "layer is the mean over its channels.",
    "CAM": "Class activation map: the last layer's feature maps weighted by the classifier's weights for a class; "
           "one forward pass, no gradients.",
    "Grad-CAM": "The last convolutional layer's feature maps weighted by the gradient of the class score; one "
                "forward and one backward pass.",
    "Teacher's evidence": "The teacher's evidence, read off the student: a small head on the student's last "
                          "layer learnt to give the teacher's Grad-CAM for every class, so the student's one forward "
                          "pass gives its answer and the teacher's evidence for it (where the head is shipped).",
    "Saliency": "The size of the gradient of the class score with respect to each pixel.",
    "Integrated gradients": "Gradients averaged along a path from a black image to the image, times the "
                            "difference; many passes.",
    "SHAP": "Shapley-value attributions: how much each region changes the score on average over coalitions of "
            "regions (KernelSHAP samples coalitions; GradientSHAP uses gradients at noisy baselines).",
    "LIME": "A linear model fitted to the class score of many copies of the image with regions hidden.",
    "Occlusion": "The drop in the class score when a square patch is covered, slid over the image.",
    "Passes (F/B)": "How many forward (F) and backward (B) passes through the model a method needs; its cost is "
                    "about that count times the time of one pass.",
    "CKA": "Centred kernel alignment: a similarity of 0 to 1 between two layers' responses to the same images "
           "(1: the same information up to rotation and scale), used to pair teacher and student layers.",
    "ECE": "Expected calibration error: the average gap between a model's confidence and its accuracy over "
           "confidence bins (0 is perfectly calibrated).",
    "McNemar's test": "A test of whether two models err on different images more often than chance allows, "
                      "counting only the images on which they disagree.",
    "Balanced accuracy": "The mean of the per-class recalls, so that a rare class counts as much as a common one.",
    "Macro F1": "The F1 score (harmonic mean of precision and recall) averaged over classes with equal weight.",
    "Agreement": "How often the student predicts the same class as the teacher.",
    "Deletion AUC": "Remove the pixels a map ranks highest first and follow the class probability: the area under "
                    "that curve. Lower means the map found what the model uses.",
    "Insertion AUC": "Start from a blurred image and restore the top-ranked pixels first: the area under the "
                     "probability curve. Higher is better.",
    "Sanity check": "Re-initialise the model's layers from the head downwards and explain again: a map that "
                    "explains the model must change (low rank correlation with the original map).",
    "Pointing game": "A hit when the map's maximum falls on the true lesion (phantom masks), within a tolerance.",
    "Spearman correlation": "Rank correlation of two maps over pixels: 1 when they order the places the same way.",
    "IoU": "Intersection over union of two regions (e.g. the top 10% of two maps): 1 when they coincide.",
    "Out-of-distribution score": "How unlike the training images an input is: the distance of the teacher's "
                                 "features to the nearest class (Mahalanobis) or the energy of its outputs, "
                                 "whichever tells other datasets apart better; above the level 95% of "
                                 "validation images stay under, the app warns that the prediction means little.",
    "95% CI": "A bootstrap 95% confidence interval: the range that the metric would likely take on another test "
              "set drawn the same way.",
}


def glossary_entries(terms: list[str] | None = None) -> list[tuple[str, str]]:
    """(term, definition) pairs for the terms given (unknown terms are an error), or all of them."""
    if terms is None:
        return list(GLOSSARY.items())
    unknown = [t for t in terms if t not in GLOSSARY]
    if unknown:
        raise KeyError(f"not in the glossary: {', '.join(unknown)}")
    return [(t, GLOSSARY[t]) for t in terms]
