"""Compare page: strategy-benchmark results (ASSFT, METHOD.md §5) — learning curves and the mean ±
sd table per pool (balanced and unbalanced), with the full-supervision ceiling and the f_0 floor —
and the open project's own learning curve (mean test Dice per evaluated model, f_0 at 0) beside them.

Results are read through `assft_core.bench.schema` (validated against the documented JSON schema)
from the project's `artifacts/benchmarks/`, the repository's `benchmarks/`, or an upload. A project
is optional here: results do not belong to one. Where each file comes from (machine, load,
command) is in an expander under the chart.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import streamlit as st

from app.bench_views import PROJECT_RESULTS, REPO_RESULTS, ProjectCurve, budget_table, load_upload, project_curve, result_files
from app.presenters import round_history
from app.safety import project_allowed
from app.ui import PROJECT_ENV, PROJECT_KEY, guard, project_arg, words_used_here
from assft_core.bench.schema import POOLS, BenchmarkResult, load_results, summarise, summarise_references
from assft_core.errors import AssftError
from assft_core.session.evaluation import baseline_metrics
from assft_core.session.project import Project, open_project
from assft_core.session.rounds import list_rounds
from assft_core.session.workspace import model_name, model_symbol
from assft_core.viz.curves import BENCHMARK_LEGEND, PROJECT_LEGEND, learning_curve_figure


def open_folder_project() -> Project | None:
    """The open project, when one is chosen, allowed and readable; None otherwise (said nowhere:
    this page works without a project)."""
    folder = st.session_state.get(PROJECT_KEY) or os.environ.get(PROJECT_ENV)
    if not folder or not project_allowed(folder, project_arg(sys.argv[1:], os.environ)):
        return None
    try:
        return open_project(folder)
    except AssftError:
        return None  # no project: results from the repository and uploads still work


def search_folders(project: Project | None) -> list[Path]:
    """The open project's `artifacts/benchmarks/` (when a project is open) and the repository's `benchmarks/`."""
    return [project.folder.joinpath(*PROJECT_RESULTS), REPO_RESULTS] if project is not None else [REPO_RESULTS]


def this_project(project: Project | None) -> ProjectCurve | None:
    """The project's learning curve from the round history the Project page shows (None: no project)."""
    if project is None:
        return None
    with guard("read this project's round history"):
        return project_curve(round_history(list_rounds(project), baseline_metrics(project)))
    return None


def chosen_results(project: Project | None) -> list[tuple[str, BenchmarkResult]]:
    """The result files picked or uploaded by the user, read and validated (errors shown, skipped)."""
    folders = search_folders(project)
    files = result_files(folders)
    picked = st.multiselect(
        "Result files",
        files,
        default=files[:1],
        format_func=lambda p: str(p),
        key="compare-files",
        help="JSON files of `assft bench strategies` under " + ", ".join(f"`{f}`" for f in folders) + ".",
    )
    uploads = st.file_uploader("…or upload result files", type="json", accept_multiple_files=True, key="compare-upload")
    results: list[tuple[str, BenchmarkResult]] = []
    for path in picked:
        try:
            results.append((str(path), load_results(path)))
        except AssftError as exc:
            st.error(f"Could not read {path}: {exc}")
    for upload in uploads or []:
        try:
            results.append((upload.name, load_upload(upload.name, upload.getvalue())))
        except AssftError as exc:
            st.error(f"Could not read the upload: {exc}")
    return results


def provenance(results: list[tuple[str, BenchmarkResult]]) -> None:
    """Where and when each result was made (machine, load, command) and its note, in one expander."""
    with st.expander(f"Where the benchmark numbers come from ({len(results)} file(s): machine, load, command)"):
        for name, result in results:
            m = result.machine
            st.markdown(
                f"`{name}`: {result.created_utc}, {len(result.records)} round records, on {m.platform} "
                f"({m.device}, {m.cpu_count} CPUs, torch {m.torch}).  \nCommand: `{' '.join(result.command)}`"
            )
            if result.note:
                st.caption(f"Note in `{Path(name).name}`: {result.note}")


def project_caption(curve: ProjectCurve | None) -> None:
    """One line on the project's curve: what it is, or why it is not drawn."""
    if curve is None:
        return
    if curve.points.empty:
        st.caption(f"**{PROJECT_LEGEND.capitalize()}**: no model evaluated on the test set yet; evaluate the {model_name(0)} on "
                   "the **Project** page and finish a round to draw its learning curve here.")
    else:
        st.caption(
            f"**{PROJECT_LEGEND.capitalize()}** (thick dark line, in every panel): mean test Dice of "
            + ", ".join(f"{r.model} ({r.labelled_count} labelled)" for r in curve.points.itertuples())
            + f". Its pool is not the benchmark's: read it beside the **{BENCHMARK_LEGEND}** curves, not against them."
            + ("" if model_symbol(0) in set(curve.points["model"]) else
               f" Evaluate the {model_name(0)} on the **Project** page to start the curve at 0 labelled.")
        )
    if curve.left_out:
        st.caption(f"Not on the curve: {', '.join(curve.left_out)}, evaluated without a labelled test set "
                   "(the biased fallback is not a test-set result).")


st.title("Compare")
st.caption(
    "Strategies at equal budgets, mean ± sd over seeds, on a balanced and an unbalanced pool, "
    "and this project's own rounds beside them. On a balanced pool random sampling already covers the sites, "
    "so a tie with random is the honest expectation."
)
words_used_here()
project = open_folder_project()
curve = this_project(project)
results = chosen_results(project)
just_results = [r for _, r in results]
summary = summarise(just_results)
references = summarise_references(just_results)
has_curve = curve is not None and not curve.points.empty
if not results:
    st.info(
        "No benchmark result chosen. Run `assft bench strategies` (its JSON goes under the project's "
        "`artifacts/benchmarks/` or the repository's `benchmarks/`), or upload a result file above."
    )
elif summary.empty:
    st.info("The chosen files hold no round records.")
if not summary.empty or has_curve:
    st.plotly_chart(learning_curve_figure(summary, references, curve.points if has_curve else None),
                    key="compare-curves")
project_caption(curve)
if results:
    provenance(results)
if summary.empty:
    st.stop()
pools = [p for p in POOLS if p in set(summary["pool"])]
missing = [p for p in POOLS if p not in pools]
if missing:
    st.warning(f"No results for the {' and '.join(missing)} pool: a strategy is judged on both pools, since "
               "random sampling already covers the sites of a balanced one.")
for pool, tab in zip(pools, st.tabs([f"{p} pool" for p in pools])):
    with tab:
        st.caption("Test mean Dice: mean ± sample sd over seeds (number of seeds), by labelled-case count.")
        st.dataframe(budget_table(summary, references, pool))
with st.expander("Every number (HD95 in mm; missed = test case/class pairs with no prediction, left out of the mean)"):
    st.dataframe(summary, hide_index=True)
    if not references.empty:
        st.dataframe(references, hide_index=True)
