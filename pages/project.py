"""Project page: the dataset (cases by site and split, integrity findings), the pre-trained model's
card, and the round history (test Dice, mean and per site, model by model; ASSFT, METHOD.md §5)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from app import store_views
from app.jobs_widget import is_active, job_panel, start_job
from app.presenters import dataset_summary, round_history
from app.ui import dice_column, guard, require_project, round_banner, round_change_panel
from assft_core.data.records import Severity
from assft_core.models.card import ModelCard
from assft_core.query.table import ScoreTable
from assft_core.session.evaluation import BIASED_NOTE, ON_TEST, baseline_metrics
from assft_core.session.round_change import round_changes
from assft_core.session.project import Project
from assft_core.session.rounds import list_rounds
from assft_core.session.workspace import base_model, model_name, model_symbol
from assft_core.viz.curves import round_history_figure

SOURCE_ORIGIN_WORDS = {
    "file": "a source-statistics file over whole source volumes (exact: the first choice)",
    "batchnorm": (
        "the checkpoint's BatchNorm running statistics (second choice: they average augmented training "
        "crops, so even source-like scans get KG > 0)"
    ),
    "none": "no source knowledge: DKD = diversity only (KG ≡ 1)",
}

COUNTS_PER_ROW = 3  # six counts in two rows: a third of a narrow column cuts "Unlabelled" short
# Summary column, metric label, what it counts.
COUNT_LABELS = (
    ("labelled", "Labelled", "usable pool cases with a label (L)"),
    ("unlabelled", "Unlabelled", "usable pool cases without a label (U \\ L): what the query picks from"),
    ("test", "Test", "usable test cases: evaluation only, never queried"),
    ("other", "Other", "cases of other splits (e.g. the model's source data): imported, never queried or evaluated"),
    ("unusable", "Unusable", "cases with integrity errors, kept out of the loop until fixed"),
    ("total", "All", "every imported case"),
)


def dataset_section(project: Project) -> None:
    """Counts by site and split, then every integrity finding with its fix."""
    cases = store_views.case_frame(project)
    st.subheader("Dataset")
    if project.dataset_root is not None:
        st.caption(f"Imported from `{project.dataset_root}`")
    if cases.empty:
        st.warning("The project holds no case: import a dataset with `assft import --dataset DIR`.")
        return
    table = dataset_summary(cases)
    total = table.loc["all sites"]
    for start in range(0, len(COUNT_LABELS), COUNTS_PER_ROW):
        row = COUNT_LABELS[start:start + COUNTS_PER_ROW]
        for col, (key, text, help_text) in zip(st.columns(COUNTS_PER_ROW), row):
            col.metric(text, int(total[key]), help=help_text)
    st.dataframe(table)
    findings = store_views.integrity_findings(project)
    if not findings:
        st.success("Integrity checks: no problem found.")
        return
    errors = sum(p.severity is Severity.ERROR for _, _, p in findings)
    with st.expander(f"Integrity findings: {errors} error(s), {len(findings) - errors} warning(s)", expanded=errors > 0):
        for case_id, usable, problem in findings:
            text = f"**{case_id}** · `{problem.file}`: {problem.message}  \n**Fix**: {problem.fix}"
            if problem.severity is Severity.ERROR:
                st.error(text + ("" if usable else "  \n(case kept out of the loop until fixed)"))
            else:
                st.warning(text)


def _latest_availability(project: Project) -> tuple[str, list[str]] | None:
    """(source-statistics origin, unavailable terms) from the newest stored score table, if any."""
    scored = [r for r in list_rounds(project) if r.score_table]
    if not scored:
        return None
    table = ScoreTable.load(project.resolve(scored[-1].score_table or ""))
    return table.availability.source_stats_origin, table.unavailable_terms()


def model_section(project: Project) -> None:
    """The card of f₀ in plain words: backbone, classes, ROI, spacing (mm), source statistics."""
    st.subheader(model_name(0).capitalize())
    with guard("read the model card"):
        ref = base_model(project)
        card = ModelCard.load(ref.path)
        facts = {
            "Backbone": card.backbone,
            "Classes (K)": f"{card.out_channels}: " + ", ".join(f"{k} = {v}" for k, v in sorted(card.classes.items())),
            "ROI (voxels)": " × ".join(map(str, card.roi_size)),
            "Spacing (mm)": " × ".join(f"{s:g}" for s in card.spacing_mm or ()),
            "Modality": card.preprocess.modality.value,
            "Input channels": str(card.in_channels),
            "Folder": str(ref.path),
        }
        # A static table wraps long values (class lists, folders) instead of cutting them off.
        st.table(pd.DataFrame({"value": list(facts.values())}, index=list(facts)))
        availability = None
        with guard("read the latest score table"):
            availability = _latest_availability(project)
        if availability is not None:
            origin, unavailable = availability
            st.write(f"Source statistics: {SOURCE_ORIGIN_WORDS.get(origin, origin)}.")
            for note in unavailable:
                st.warning(note)
        elif card.source_stats:
            st.write(f"Source statistics: {SOURCE_ORIGIN_WORDS['file']} (`{card.source_stats}`).")
        else:
            st.write(
                "Source statistics: no statistics file in the card; the first scoring pass uses BatchNorm running "
                f"statistics if the network has them, otherwise: {SOURCE_ORIGIN_WORDS['none']}."
            )
        if card.notes:
            st.caption(card.notes)


def baseline_controls(project: Project) -> dict[str, Any] | None:
    """f₀'s stored test evaluation (where fine-tuning starts), or a button that computes it."""
    baseline = None
    with guard(f"read the evaluation of the {model_name(0)}"):
        baseline = baseline_metrics(project)
    if baseline is None:
        st.caption(f"The history starts with the {model_name(0)} as it is: evaluate it to see where "
                   "fine-tuning starts.")
        if st.button(f"Evaluate the {model_name(0)} on the test set", key="evaluate-baseline",
                     disabled=is_active(project, "evaluate")):
            with guard(f"start the evaluation of the {model_name(0)}"):
                start_job(project, "evaluate", {"baseline": True})
                st.rerun()
        job_panel(project, "evaluate", match={"baseline": True})
    return baseline


def history_section(project: Project) -> None:
    """Test Dice per model (f₀, then each round's), overall and per site, with the labelled count."""
    st.subheader("Round history")
    points = round_history(list_rounds(project), baseline_controls(project))
    if not points:
        st.info("No evaluated model yet: finish a round (query, label, fine-tune) to see test Dice here.")
        return
    fig = round_history_figure(
        [p.model_round for p in points],
        [float("nan") if p.mean_dice is None else p.mean_dice for p in points],
        [p.per_site for p in points],
        [p.labelled for p in points],
        tick_labels=[model_symbol(p.model_round) for p in points],
    )
    fig.update_xaxes(title={"text": "model (fₜ: after t rounds of fine-tuning)"})
    st.plotly_chart(fig)
    if any(p.evaluated_on != ON_TEST for p in points):
        st.warning(BIASED_NOTE)
    rows = [
        {"model": model_name(p.model_round), "labelled": p.labelled, "evaluated on": p.evaluated_on,
         "mean Dice": p.mean_dice, **p.per_site}
        for p in points
    ]
    sites = sorted({site for p in points for site in p.per_site})
    st.dataframe(pd.DataFrame(rows), hide_index=True,
                 column_config={column: dice_column() for column in ["mean Dice", *sites]})
    changes = round_changes(project)
    if changes:
        st.markdown(f"**What round {changes[-1].round} changed** (the latest round; test Dice per site)")
        round_change_panel(changes[-1])
        worse_before = [c for c in changes[:-1] if c.comparable and c.worse_sites]
        for c in worse_before:
            st.caption(" ".join(c.sentences()))


st.title("Project")
project = require_project()
round_banner(project, "Project")
left, right = st.columns([3, 2], gap="large")
with left:
    dataset_section(project)
with right:
    model_section(project)
history_section(project)
