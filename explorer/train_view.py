"""The Train page's running job: start it, follow it live, and keep what it produced under its run key."""

from __future__ import annotations

import time

import streamlit as st
from streamlit.runtime import Runtime
from streamlit.runtime.scriptrunner import get_script_run_ctx

from core.recipe import TrainConfig
from core.roles import TEACHER
from explorer import cached_plots, state, ui
from explorer.names import role_label
from explorer.training import TrainingJob, computed_for

JOB = "_train_job"  # this session's job, running or finished and not yet collected
FAILED = "_train_failed"  # (run key, message) of this session's last failed run
STOPPED = "_train_stopped"  # (run key, curves so far) of this session's last stopped run


def session_connected(session: str) -> bool:
    """Whether the server has the browser tab of ``session`` connected (asked from the job's thread). Outside a
    server (a script run by hand, a test's page) there is no runtime, and the caller is the session itself."""
    return not Runtime.exists() or bool(Runtime.instance().is_active_session(session))


def reconnect_window_s() -> float:
    """How long the server keeps a disconnected session for its tab to reconnect (a network blip, a laptop lid)."""
    return float(st.get_option("server.disconnectedSessionTTL"))


class SessionWatch:
    """Whether a session is still there, for its job to ask while it waits and runs: connected, or disconnected for
    less than the server keeps it. Past that its tab is gone for good, and no one can see the run's result."""

    def __init__(self, session: str):
        self.session, self.absent_since = session, None

    def __call__(self) -> bool:
        if session_connected(self.session):
            self.absent_since = None
            return True
        now = time.monotonic()
        if self.absent_since is None:
            self.absent_since = now
        return now - self.absent_since < reconnect_window_s()


def this_session() -> SessionWatch | None:
    ctx = get_script_run_ctx()
    return SessionWatch(ctx.session_id) if ctx is not None else None


def start(key: str, cfg: TrainConfig, teacher_path: str | None, classes: list[str]) -> None:
    """Start this session's job, unless one runs already (a click on a stale page draws none). A job whose tab is
    closed never starts, or stops (`explorer.training.TrainingJob`)."""
    if st.session_state.get(JOB) is None:
        st.session_state.pop(FAILED, None)
        st.session_state[JOB] = TrainingJob(key, cfg, teacher_path, classes, alive=this_session()).start()


def running() -> TrainingJob | None:
    """This session's job while it runs; a finished one's result (or failure) is moved into the page's results."""
    job = st.session_state.get(JOB)
    if job is None or not job.finished:
        return job
    del st.session_state[JOB]
    if job.state == "done":
        state.results("train")[job.key] = job.result
    elif job.state == "failed":
        st.session_state[FAILED] = (job.key, job.error)
    elif job.state == "stopped":
        st.session_state[STOPPED] = (job.key, job.snapshot())
    return None


def stopped(key: str) -> dict[str, list[dict]] | None:
    """The curves, up to the stop, of the last run with these settings if it was stopped (possibly empty)."""
    found = st.session_state.get(STOPPED)
    return found[1] if found and found[0] == key else None


def failure(key: str) -> str | None:
    """Why the last run with these settings failed, if it did."""
    failed = st.session_state.get(FAILED)
    return failed[1] if failed and failed[0] == key else None


def describe(job: TrainingJob) -> str:
    if job.state == "queued":
        ahead = "" if not job.ahead else f" ({job.ahead} run{'s' if job.ahead > 1 else ''} ahead of yours)"
        return f"Waiting: another session's training is using the server's training slot{ahead} ..."
    if job.role is None:
        return "Starting the training process ..."
    done = len(job.snapshot().get(job.role, []))
    epochs = job.cfg.teacher_epochs if job.role == TEACHER.shipped else job.cfg.student_epochs
    return f"Training {role_label(job.role)}: epoch {done} of {epochs} done ..."


@st.fragment(run_every=1.0)
def progress(job: TrainingJob) -> None:
    """Live status and curves of a running job, redrawn every second; the whole page reruns when it ends."""
    if job.finished:
        st.rerun()
    with st.status(describe(job), expanded=True):
        st.caption(computed_for(job.key) + " Training runs in its own process at a lower priority, so the app "
                   "stays responsive for everyone.")
        curves = job.snapshot()
        if curves:
            ui.plot(cached_plots.curves(curves), "train_live")
        if st.button("Stop training", key="train_stop"):
            job.stop()
