"""Train and distil: a teacher, a distilled student and a label-only student on a small subset, live curves."""

import streamlit as st

from core.models import REGISTERED_TEACHERS
from core.recipe import TrainConfig
from core.catalog import DATASETS
from core.roles import DISTILLED, LABEL_ONLY, TEACHER
from explorer import (cached_plots, chrome, listing, loaders, own_data_view, state, train_estimate, train_view,
                      training, ui)
from explorer.names import role_label
from explorer.text import plain

dataset = chrome.current_dataset()
chrome.page_header("Train and distil",
                   "Train a small teacher, distil it into a student, and train the same student from labels alone, on "
                   "a capped subset within a time cap. Runs in a temporary folder: the shipped and cached models "
                   "are never changed (a dataset of your own that has no models yet keeps the ones trained here).",
                   terms=("Teacher", "Student", "Label-only student", "Knowledge distillation (KD)"))
own_data_view.zip_upload()
if not loaders.images_available(dataset):
    ui.no_images_help(dataset, listing.status(dataset)["reason"])
    st.stop()
if dataset != "phantom":
    st.caption(f"{dataset}: a capped, class-balanced subset of the training images is used.")

shipped = loaders.load_model(dataset, TEACHER.shipped)
sources = ["train a new teacher"] + (["distil the shipped teacher"] if shipped else [])
c1, c2, c3 = st.columns(3)
source = c1.radio("Teacher", sources, key="train_source")
use_shipped = source == "distil the shipped teacher"
arch = c2.selectbox("Teacher architecture", sorted(REGISTERED_TEACHERS, key=lambda a: a != "resnet18"),
                    key="train_arch", disabled=use_shipped,
                    help="densenet121 is the paper's teacher; it trains about 3x slower here. Any other torchvision "
                         "CNN trains from the command line: python -m core.train --teacher-arch resnet50 ...")
size_options = [32, 48, 64, 96, 128]
size = shipped.meta.input_size if use_shipped else c3.select_slider("Input size (px)", size_options, value=64,
                                                                    key="train_size")
c1, c2, c3, c4 = st.columns(4)
epochs = c1.slider("Epochs", 1, 20, 8, key="train_epochs")
per_class = c2.slider("Training images per class", 8, 240, 120, step=8, key="train_per_class")
cap = c3.slider("Time cap per model (s)", 10, 300, 60, step=10, key="train_cap")
label_only = c4.checkbox("Also train a label-only student", value=True, key="train_label_only")
c1, c2, c3 = st.columns(3)
alpha = c1.slider("alpha (weight of the label loss)", 0.0, 1.0, 0.5, 0.05, key="train_alpha",
                  help="loss = alpha CE(student, label) + (1 - alpha) T^2 KL(teacher/T || student/T) "
                       "(Hinton et al. 2015)")
temperature = c2.slider("Temperature T", 1.0, 10.0, 4.0, 0.5, key="train_temperature")
depth = c3.slider("Student depth (conv blocks)", 3, 8, 5, key="train_depth")

recipe = TrainConfig(dataset=dataset, root=DATASETS[dataset].root or None, teacher_arch=arch, teacher_epochs=int(epochs), student_epochs=int(epochs),
                     max_per_class=int(per_class), input_size=int(size), depth=int(depth), time_cap_s=float(cap),
                     loss_args={"alpha": float(alpha), "temperature": float(temperature)},
                     label_only=bool(label_only))
results = state.results("train")
run_key = training.run_key(recipe, loaders.model_versions({TEACHER.shipped: shipped}) if use_shipped else None)
job = train_view.running()
if st.button("Train", key="train_run", type="primary", disabled=job is not None,
             help="one run at a time per session; it stops at the time cap of each model"):
    train_view.start(run_key, recipe, shipped.path if use_shipped else None, list(DATASETS[dataset].classes))
    st.rerun()  # drawn again with the button disabled while the job runs
if job is not None:
    train_view.progress(job)
if (message := train_view.failure(run_key)) is not None:
    st.error(f"Training failed: {message}")
if job is None and (curves := train_view.stopped(run_key)) is not None:
    st.info("Stopped: " + ("the curves up to the stop are below; " if any(curves.values()) else
                           "before its first epoch ended; ") + "its models were not tested and nothing was kept.")
    if any(curves.values()):
        ui.plot(cached_plots.curves(curves), "train_curves_stopped")

last = results.get(run_key)
if last is None:
    if job is None:
        models = training.models_trained(recipe, use_shipped)
        st.caption(f"Press Train: it trains {models} model{'s' if models != 1 else ''}, each stopped at the time cap "
                   f"({cap} s), then tests them on a small subset. "
                   + train_estimate.estimate(recipe, len(DATASETS[dataset].classes), use_shipped).sentence())
    st.stop()
st.caption(training.computed_for(run_key))
if last.get("kept"):
    st.success(plain(last["kept"]), icon=":material/inventory_2:")
    listing.status.clear()  # the picker and Home say at once that the dataset has models now
st.subheader("Curves")
ui.plot(cached_plots.curves({name: r["history"] for name, r in last["runs"].items()}), "train_curves")
st.subheader(f"Results on {last['test_images']} test images")
cols = st.columns(len(last["runs"]))
for col, (name, run) in zip(cols, last["runs"].items()):
    with col:
        st.metric(f"{role_label(name)} test accuracy", f"{run['test_accuracy']:.1%}")
        planned = recipe.teacher_epochs if name == TEACHER.shipped else recipe.student_epochs
        st.caption(f"{run['parameters']:,} parameters, {len(run['history'])} of {planned} epochs in "
                   f"{run['seconds']:.0f} s" + (f"; **cut short**: {run['stopped']}" if run["stopped"] else ""))
distilled, label_only = last["runs"].get(DISTILLED.shipped), last["runs"].get(LABEL_ONLY.shipped)
if distilled is not None and label_only is not None:
    gain = distilled["test_accuracy"] - label_only["test_accuracy"]
    st.caption(f"Distillation changed the student's test accuracy by {gain:+.1%} against labels alone "
               "(one seed on a small subset: expect noise of several points).")
