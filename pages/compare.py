"""Compare page: strategy-benchmark results (ASSFT, METHOD.md §5) — learning curves and the mean ±
sd table per pool (balanced and unbalanced), with the full-supervision ceiling and the f_0 floor.

Results are read through `assft_core.bench.schema` (validated against the documented JSON schema)
from the project's `artifacts/benchmarks/`, the repository's `benchmarks/`, or an upload. A project
is optional here: results do not belong to one.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from app.bench_views import PROJECT_RESULTS, REPO_RESULTS, budget_table, load_upload, result_files
from app.ui import PROJECT_ENV, PROJECT_KEY
from assft_core.bench.schema import POOLS, BenchmarkResult, load_results, summarise, summarise_references
from assft_core.errors import AssftError
from assft_core.session.project import open_project
from assft_core.viz.curves import learning_curve_figure


def search_folders() -> list[Path]:
    """The open project's `artifacts/benchmarks/` (when a project is open) and the repository's `benchmarks/`."""
    folders = [REPO_RESULTS]
    folder = st.session_state.get(PROJECT_KEY) or os.environ.get(PROJECT_ENV)
    if folder:
        try:
            folders.insert(0, open_project(folder).folder.joinpath(*PROJECT_RESULTS))
        except AssftError:
            pass  # no project: results from the repository and uploads still work
    return folders


def chosen_results() -> list[tuple[str, BenchmarkResult]]:
    """The result files picked or uploaded by the user, read and validated (errors shown, skipped)."""
    folders = search_folders()
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


def describe(name: str, result: BenchmarkResult) -> None:
    """Where and when a result was made, in one caption (and its note, e.g. a fixture's warning)."""
    m = result.machine
    st.caption(
        f"`{name}`: {result.created_utc}, `{' '.join(result.command)}` on {m.platform} ({m.device}, "
        f"{m.cpu_count} CPUs, torch {m.torch}); {len(result.records)} round records."
    )
    if result.note:
        st.warning(f"Note in `{Path(name).name}`: {result.note}")


st.title("Compare")
st.caption(
    "Strategies at equal budgets, mean ± sd over seeds, on a balanced and an unbalanced pool (METHOD.md §5). "
    "On a balanced pool random sampling already covers the sites, so a tie with random is the honest expectation."
)
results = chosen_results()
if not results:
    st.info(
        "No benchmark result chosen. Run `assft bench strategies` (its JSON goes under the project's "
        "`artifacts/benchmarks/` or the repository's `benchmarks/`), or upload a result file above."
    )
    st.stop()
for name, result in results:
    describe(name, result)
just_results = [r for _, r in results]
summary = summarise(just_results)
references = summarise_references(just_results)
if summary.empty:
    st.info("The chosen files hold no round records.")
    st.stop()
st.plotly_chart(learning_curve_figure(summary, references), key="compare-curves")
pools = [p for p in POOLS if p in set(summary["pool"])]
missing = [p for p in POOLS if p not in pools]
if missing:
    st.warning(f"No results for the {' and '.join(missing)} pool: report both pools (METHOD.md §5).")
for pool, tab in zip(pools, st.tabs([f"{p} pool" for p in pools])):
    with tab:
        st.caption("Test mean Dice: mean ± sample sd over seeds (number of seeds), by labelled-case count.")
        st.dataframe(budget_table(summary, references, pool))
with st.expander("Every number (HD95 in mm; missed = test case/class pairs with no prediction, left out of the mean)"):
    st.dataframe(summary, hide_index=True)
    if not references.empty:
        st.dataframe(references, hide_index=True)
