"""Lesson: a guided story for a class, one step per screen (Next/Prev, PageDown/PageUp as a presenter's clicker
sends them, and ``?step=`` for a deep link to each step)."""

import streamlit as st

from explorer import chrome, lesson_view, state, ui

dataset = chrome.current_dataset()
# no introduction or glossary: each step's picture and sentences fill one screen of a laptop or a projector
chrome.page_header("Lesson: can we trust a fast explanation?")
st.html(lesson_view.PROJECTOR_TYPE)
pair = ui.models_or_help(dataset)
if not pair:
    st.stop()
teacher, student = pair
n_steps = len(lesson_view.STEPS)
state.bind("lesson_step", 1, param="step", parse=int, lo=1, hi=n_steps)  # 1-based, as shown: ?step=2
prev_col, title_col, next_col = st.columns([1.6, 7, 1.6], vertical_alignment="center")
prev_col.button("Prev", key="lesson_prev", icon=":material/chevron_left:", on_click=state.step,
                args=("lesson_step", -1, 1, n_steps), disabled=st.session_state["lesson_step"] == 1, shortcut="PageUp",
                help="The step before (PageUp, as a presenter's clicker sends it)")
next_col.button("Next", key="lesson_next", icon=":material/chevron_right:", on_click=state.step,
                args=("lesson_step", 1, 1, n_steps), disabled=st.session_state["lesson_step"] == n_steps,
                shortcut="PageDown", help="The next step (PageDown, as a presenter's clicker sends it)")
state.publish("lesson_step", param="step")
number = int(st.session_state["lesson_step"])
step = lesson_view.STEPS[number - 1]
title_col.subheader(f"Step {number} of {n_steps}: {step.title}")
lesson_view.draw(step, dataset, teacher, student)
