"""Fine-tune page: steps, SSFT mode and device; the training job with a live progress bar and loss
curve read from the store (they survive a reload); cancel / resume; result metrics with the
unlabelled cases SSFT admitted; then evaluation and the next round (ASSFT, METHOD.md §4–§5).
After training the step inputs stay, and **Fine-tune again** trains the round anew with other
settings, its earlier model kept aside (`session.training_round.reopen_round`)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.jobs_widget import is_active, job_panel, start_job
from app.presenters import describe_estimate, fmt_number, format_seconds, read_progress_events
from app.ui import STATE_WORDS, flash, guard, require_project, round_banner, round_change_panel
from assft_core.config import SSFTMode
from assft_core.models.inference import resolve_device
from assft_core.session import jobs, rounds
from assft_core.session.estimate import QUICK_DEMO, Preset, training_estimate
from assft_core.session.evaluation import BIASED_NOTE, ON_TEST, dice_text, hd95_text
from assft_core.session.round_change import round_changes
from assft_core.session.jobs import JobInfo
from assft_core.session.project import Project
from assft_core.session.rounds import RoundInfo, RoundState
from assft_core.session.workspace import model_name
from assft_core.viz.curves import loss_curve_figure

SSFT_WORDS = {
    SSFTMode.SELECTIVE: "selective: add the unlabelled cases whose pseudo-labels look reliable "
    "(top ρ by confidence × closeness to the labelled cases)",
    SSFTMode.NONE: "none: supervised fine-tuning on the labelled cases only",
    SSFTMode.ALL: "all: every unlabelled case with its pseudo-label (naive self-training; ablation)",
    SSFTMode.CONFIDENCE_ONLY: "confidence only: reliability from confidence alone (ablation)",
    SSFTMode.DISTANCE_ONLY: "distance only: reliability from closeness to the labelled cases alone (ablation)",
}
LOSS_KEYS = ("step", "loss", "lr")
SHOWN_METRICS = {"mean_dice", "evaluated_on", "final_loss", "labelled", "unlabelled", "admitted", "ssft_mode",
                 "ssft_warnings", "ssft_cases", "wall_s", "stopped"}
BEFORE_LABELLED = (RoundState.OPEN, RoundState.SCORED, RoundState.PROPOSED, RoundState.APPROVED)
AFTER_TRAINING = (RoundState.TRAINED, RoundState.EVALUATED)


def device_line(project: Project) -> None:
    """Which device the training job will use (CUDA when present, else CPU)."""
    with guard("resolve the training device"):
        device = resolve_device(project.config.train.device)
        if device.type == "cuda":
            import torch

            st.success(f"Device: CUDA ({torch.cuda.get_device_name(device)})")
        else:
            st.info("Device: CPU (no CUDA GPU here). A round of a few hundred steps takes minutes.")


def gpu_processes() -> int:
    """Training processes: offered only when more than one CUDA GPU is visible (DDP, one GPU each)."""
    import torch

    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n_gpus <= 1:
        return 1
    return int(st.number_input(f"GPUs (DDP; {n_gpus} visible)", min_value=1, max_value=n_gpus, value=n_gpus,
                               key="ft-nproc", help="One training process per GPU under torchrun (docs/distributed.md)."))


def _use_preset(preset: Preset) -> None:
    """Put a preset's steps into the step inputs (a button callback, before the inputs are drawn)."""
    st.session_state["ft-sup"] = preset.supervised_steps
    st.session_state["ft-ssft"] = preset.ssft_steps


def launch_form(project: Project, info: RoundInfo) -> None:
    """Steps and SSFT mode, then the launch button: on once the round is labelled; before, what to do;
    after training, the inputs stay (settings for the next round) with the button off and why."""
    if info.state in BEFORE_LABELLED:
        st.warning(
            f"Label the approved cases first (round {info.idx}: {STATE_WORDS[info.state]}): fine-tuning starts "
            "once every approved pick has a label."
        )
        return
    trained = info.state in AFTER_TRAINING
    if trained:
        st.info(
            f"Round {info.idx} is fine-tuned already. To try other settings, change them below and press "
            f"**Fine-tune again**: the current {model_name(info.idx + 1)} is kept (moved aside, not deleted) "
            "and its test result stays in the project history."
        )
    cfg = project.config.ssft
    st.session_state.setdefault("ft-sup", cfg.supervised_steps)
    st.session_state.setdefault("ft-ssft", cfg.ssft_steps)
    c1, c2, c3 = st.columns([1, 1, 2])
    sup = c1.number_input("Supervised steps (S)", min_value=1, step=10, key="ft-sup")
    uns = c2.number_input("SSFT steps (S_u)", min_value=0, step=10, key="ft-ssft")
    modes = list(SSFTMode)
    mode = c3.selectbox("SSFT mode", modes, index=modes.index(cfg.mode), format_func=lambda m: SSFT_WORDS[m],
                        key="ft-mode")
    quick = training_estimate(project, QUICK_DEMO.supervised_steps, QUICK_DEMO.ssft_steps, mode)
    st.button(f"{QUICK_DEMO.name}: {QUICK_DEMO.supervised_steps} + {QUICK_DEMO.ssft_steps} steps, "
              f"about {format_seconds(quick.total_s)}", key="ft-quick", on_click=_use_preset,
              args=(QUICK_DEMO,), help=f"{QUICK_DEMO.purpose}. Sets the steps above; nothing starts yet.")
    headline, parts = describe_estimate(training_estimate(project, int(sup), int(uns), mode))
    st.info(f"Expected time of this fine-tuning and its evaluation: **{headline}**.")
    st.caption(f"Per phase: {parts}.")
    nproc = gpu_processes()
    busy = is_active(project, "train") or is_active(project, "evaluate")
    if st.button("Fine-tune again" if trained else "Fine-tune", key="train", type="secondary" if trained else "primary",
                 disabled=busy, help="Runs in the background; you can close the tab."):
        params = {
            "round": info.idx,
            "supervised_steps": int(sup),
            "ssft_steps": int(uns),
            "ssft_mode": SSFTMode(mode).value,
            "device": project.config.train.device,
            "nproc": nproc,
        }
        with guard("start fine-tuning"):
            if trained:
                from assft_core.session.training_round import reopen_round  # imports the trainer: only on a click

                earlier = reopen_round(project)
                if earlier is not None:
                    flash(f"The earlier model is kept in {project.relative(earlier)}.")
            start_job(project, "train", params)
            st.rerun()


def loss_curve(job: JobInfo) -> None:
    """The job's loss curve from its progress file (drawn on every refresh of the job panel)."""
    events = [e for e in read_progress_events(job.run_dir) if all(k in e for k in LOSS_KEYS)]
    if events:
        st.plotly_chart(loss_curve_figure(events), key=f"loss-{job.id}")
    elif job.status in jobs.ACTIVE:
        st.caption("The loss curve appears after the first training step.")


def results(job: JobInfo) -> None:
    """A finished train job's results: Dice, loss, SSFT admissions (which cases and why), timings.

    The metrics are the train job's (`session.training_round.train_round`): "mean_dice",
    "final_loss", "labelled", "unlabelled", "admitted", "ssft_warnings", "ssft_cases" (one row per
    unlabelled case: c, s, r, admitted, reason ...), "wall_s" per phase; anything else is listed raw.
    """
    if job.status in jobs.ACTIVE or not job.metrics:
        return
    m = job.metrics
    st.subheader(f"Results of train job #{job.id}")
    if m.get("stopped"):
        st.info("Stopped before the end: resume continues from the last checkpoint.")
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Mean Dice", dice_text(m.get("mean_dice")), help=f"evaluated on: {m.get('evaluated_on') or 'n/a'}")
    c2.metric("Final loss", fmt_number(m.get("final_loss"), 4))
    c3.metric("Labelled cases", m.get("labelled", "n/a"))
    c4.metric("Admitted by SSFT", f"{m.get('admitted', 'n/a')} of {m.get('unlabelled', 'n/a')}",
              help=f"SSFT mode: {m.get('ssft_mode') or 'n/a'}")
    for warning in m.get("ssft_warnings") or []:
        st.warning(warning)
    st.markdown("**Which unlabelled cases SSFT admitted, and why**")
    cases = pd.DataFrame(m.get("ssft_cases") or [])
    if cases.empty:
        st.caption("No SSFT selection in this job (mode 'none', or stopped before the selection).")
    else:
        order = [c for c in ("admitted", "reliability") if c in cases.columns]
        st.dataframe(cases.sort_values(order, ascending=False) if order else cases, hide_index=True)
    wall = m.get("wall_s") or {}
    if wall:
        st.caption("Wall time: " + " · ".join(f"{phase} {format_seconds(s)}" for phase, s in wall.items()))
    rest = {k: v for k, v in m.items() if k not in SHOWN_METRICS}
    if rest:
        with st.expander("All other metrics"):
            st.json(rest)


def after_training(project: Project, info: RoundInfo) -> None:
    """Evaluate the trained model, then open the next round."""
    if info.state is RoundState.TRAINED and st.button(
        "Evaluate on the test set", key="evaluate", type="primary", disabled=is_active(project, "evaluate")
    ):
        with guard("start the evaluation"):
            start_job(project, "evaluate", {"round": info.idx})
            st.rerun()
    job_panel(project, "evaluate", match={"round": info.idx})
    if info.state is RoundState.EVALUATED:
        on_test = info.metrics.get("evaluated_on", ON_TEST) == ON_TEST
        label = "Test mean Dice" if on_test else "Mean Dice on the new labels (biased)"
        overall = info.metrics.get("overall") or {}
        st.markdown(f"**Evaluation of the {model_name(info.idx + 1)}**")
        st.metric(label, dice_text(overall.get("mean_dice")))
        st.caption(hd95_text(overall))
        if not on_test:
            st.caption(BIASED_NOTE)
        change = next((c for c in round_changes(project) if c.round == info.idx), None)
        if change is not None:
            st.markdown(f"**What round {info.idx} changed** (test Dice, per site)")
            round_change_panel(change)
        if st.button(f"Start round {info.idx + 1}", key="next-round", type="primary"):
            with guard("start the next round"):
                new = rounds.start_next_round(project)
                flash(f"Round {new.idx} opened: score the pool on the Query page.")
                st.rerun()


st.title("Fine-tune")
project = require_project()
info = round_banner(project, "Fine-tune")
device_line(project)
launch_form(project, info)
job = job_panel(project, "train", extra=loss_curve, match={"round": info.idx})
if job is not None:
    results(job)
if info.state in AFTER_TRAINING:
    st.divider()
    after_training(project, info)
