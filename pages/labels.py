"""Labels page: per approved case its image and the model's prediction as a starting label to download,
an expert label (NIfTI upload) previewed over the image and validated against it before anything is
stored, or the oracle in demo mode; the picks as a zip for 3D Slicer / ITK-SNAP and the
corrected labels back in one upload, with the annotation effort; every case's label versions listed."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from app.ui import dice_column, flash, guard, require_project, round_banner
from assft_core.session import annotation, labels, rounds
from assft_core.session.paths import nifti_suffix
from assft_core.session.project import Project
from assft_core.session.rounds import QueryStatus, RoundInfo, RoundState
from assft_core.session.workspace import tag_name
from assft_core.viz.slices import Axis, n_slices, slice_figure, to_ras

NIFTI_TYPES = ["nii", "gz"]  # .nii and .nii.gz; the engine's validation decides the rest
ZIP_KEY = "labels-picks-zip"  # session state: (round, zip bytes) of the last export


def preview_panel(project: Project, case_id: str, uploaded: Any, key: str) -> bool:
    """The upload checked against the case's image and drawn over it, before it is stored.

    Returns:
        Whether the file would be stored (valid).
    """
    cache = f"preview-{key}"
    held = st.session_state.get(cache)
    if held is None or held[0] != uploaded.file_id:
        with st.spinner(f"Checking {uploaded.name} against the image of {case_id}…"):
            held = (uploaded.file_id, labels.preview_upload(project, case_id, uploaded.getvalue(), uploaded.name))
        st.session_state[cache] = held
    preview: labels.UploadPreview = held[1]
    if not preview.ok:
        st.error(f"{preview.file_name} would not be stored for {case_id}:  \n" + "  \n".join(preview.errors))
        return False
    for warning in preview.warnings:
        st.warning(f"{preview.file_name}: {warning}")
    axial = Axis.AXIAL
    depth = n_slices(tuple(preview.image.shape), axial, preview.affine)
    fg = np.argwhere(to_ras(preview.label > 0, preview.affine)[0])
    start = int(np.median(fg[:, 2])) if len(fg) else depth // 2
    index = st.slider(f"Axial slice of {preview.file_name}", 0, depth - 1, start, key=f"preview-slice-{key}")
    fig = slice_figure(preview.image, axis=axial, index=index, affine=preview.affine, label=preview.label,
                       opacity=0.45, class_names=project.classes,
                       layout={"title": {"text": f"{preview.file_name} over {case_id} · axial {index} / {depth - 1}"},
                               "height": 380})
    st.plotly_chart(fig, key=f"preview-figure-{key}")
    st.caption(f"{preview.file_name} fits the image of {case_id}: nothing is stored until you press the button.")
    return True


def upload_form(project: Project, case_id: str, key: str, button: str) -> None:
    """A file picker, a preview of the upload over the image, and a store button; errors with their fix.

    Nothing is stored unless `labels.label_upload` validates the file against the case's image
    (shape, affine, classes); the preview runs the same checks first.
    """
    uploaded = st.file_uploader(f"Label file for {case_id} (NIfTI, same grid as its image)", type=NIFTI_TYPES,
                                key=f"file-{key}")
    valid = uploaded is not None and preview_panel(project, case_id, uploaded, key)
    if st.button(button, key=f"store-{key}", disabled=not valid):
        with guard(f"store the label of {case_id}"):
            version = labels.label_upload(project, case_id, uploaded.getvalue(), uploaded.name)
            warnings = "".join(f"  \n{problem}" for problem in version.validation)
            flash(f"{case_id}: label version {version.version} stored ({version.sha256[:12]}).{warnings}")
            st.rerun()


def downloads(files: annotation.PickFiles) -> None:
    """Download buttons for a pick's image and (once prepared) the model's prediction as a starting label."""
    c1, c2 = st.columns(2)
    for i, image in enumerate(files.images):
        suffix = nifti_suffix(image) or "".join(image.suffixes)
        c1.download_button(f"Download the image{'' if len(files.images) == 1 else f' (channel {i})'}", image.read_bytes,
                           file_name=f"{files.case_id}_{i:04d}{suffix}", key=f"image-{files.case_id}-{i}",
                           help="The original image file, byte for byte.")
    if files.preannotation is not None:
        c2.download_button("Download the starting label (model's prediction)", files.preannotation.read_bytes,
                           file_name=f"{files.case_id}_preannotation.nii.gz", key=f"pre-{files.case_id}",
                           help=f"The prediction of the {tag_name(files.model)} on the image's own grid, to correct rather "
                                "than draw from scratch.")
    else:
        c2.caption("Starting label: press **Prepare the picks** below to run the model on each pick.")


def approved_section(project: Project, info: RoundInfo) -> None:
    """This round's approved picks: label status, downloads, the oracle button (demo) and an upload each."""
    approved = [q.case_id for q in rounds.list_queries(project) if q.status is QueryStatus.APPROVED]
    st.subheader(f"Approved cases of round {info.idx}")
    if not approved:
        st.warning("Approve picks first on the **Query** page: only approved picks of the current round take a label.")
        return
    current = labels.current_labels(project)
    missing = [c for c in approved if c not in current]
    if not missing:
        st.success("Every approved case has a label: fine-tune on the **Fine-tune** page.")
    if missing and info.state is RoundState.APPROVED and project.oracle and st.button(
        f"Label {len(missing)} case(s) with the oracle (demo)",
        type="primary",
        help="Demo / benchmark mode: the dataset's reference labels, marked 'oracle' everywhere.",
    ):
        with guard("label with the oracle"):
            done = labels.label_with_oracle(project)
            flash(f"Oracle labels stored for {', '.join(v.case_id for v in done)}.")
            st.rerun()
    for files in annotation.pick_files(project):
        c = files.case_id
        status = f"label v{current[c].version} ({current[c].source})" if c in current else "no label yet"
        with st.container(border=True):
            st.markdown(f"**{c}** · site {files.site} — {status}")
            downloads(files)
            if c not in current and info.state is RoundState.APPROVED:
                upload_form(project, c, f"{info.idx}-{c}", "Validate and store")


def round_trip_section(project: Project, info: RoundInfo) -> None:
    """The annotation round trip: the approved picks with pre-annotations as a zip for 3D Slicer /
    ITK-SNAP, and the corrected labels back in one multi-file upload, with the effort per case."""
    approved = [q.case_id for q in rounds.list_queries(project) if q.status is QueryStatus.APPROVED]
    st.subheader("Label in 3D Slicer / ITK-SNAP")
    if not approved:
        st.caption("Approved picks of the round can be exported here with the model's prediction as a start.")
    else:
        st.caption("The zip holds each approved pick's image (unchanged), the current model's prediction as a "
                   "pre-annotation, label files for ITK-SNAP (labels.txt) and 3D Slicer (assft.ctbl) and a "
                   "manifest. Save each corrected label as `<case>.nii.gz` and upload them below.")
        if st.button("Prepare the picks (runs the model on each)", key="export-picks"):
            with guard("export the picks"):
                st.session_state[ZIP_KEY] = (info.idx, annotation.export_picks_zip(project))
                st.rerun()  # the per-pick starting labels above appear too
        ready = st.session_state.get(ZIP_KEY)
        if ready and ready[0] == info.idx:
            st.download_button("Download the picks (zip)", ready[1], file_name=f"assft-round-{info.idx}-picks.zip",
                               mime="application/zip", key="download-picks")
    uploads = st.file_uploader("Corrected labels (<case>.nii.gz, several at once)", type=NIFTI_TYPES,
                               accept_multiple_files=True, key="bulk-labels")
    if st.button("Validate and store the corrected labels", key="import-labels", disabled=not uploads):
        with guard("import the corrected labels"):
            report = annotation.import_label_uploads(project, [(u.name, u.getvalue()) for u in uploads])
            for name, why in sorted(report.refused.items()):
                st.error(f"{name} was not stored: {why}")
            if report.stored:
                lines = "".join(f"  \n{annotation.format_effort(e)}" for e in report.stored)
                message = f"{len(report.stored)} label(s) stored.{lines}"
                if report.refused:  # stay on this run: the errors above stay visible
                    st.success(message)
                else:
                    flash(message)
                    st.rerun()
    efforts = annotation.round_efforts(project)
    if efforts:
        dice = "mean Dice (pre-annotation vs final)"
        st.dataframe(pd.DataFrame([
            {"round": e.round, "cases": e.cases, "voxels changed": e.changed_voxels,
             "slices changed": e.changed_slices, dice: e.mean_dice}
            for e in efforts.values()
        ]), hide_index=True, column_config={dice: dice_column()})


def versions_section(project: Project) -> None:
    """Every label version of a chosen labelled case, and an upload for a corrected version."""
    st.subheader("Label versions")
    current = labels.current_labels(project)
    if not current:
        st.info("No case is labelled yet.")
        return
    case_id = st.selectbox("Case", sorted(current), key="versions-case")
    rows = [
        {
            "version": v.version,
            "source": v.source,
            "file name": v.original_name,
            "sha256": v.sha256[:12],
            "round": v.round,
            "stored": dt.datetime.fromtimestamp(v.created_at).strftime("%Y-%m-%d %H:%M"),
            "warnings": len(v.validation),
        }
        for v in labels.label_versions(project, case_id)
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    with st.expander(f"Upload a corrected label for {case_id} (older versions are kept)"):
        upload_form(project, case_id, f"fix-{case_id}", "Validate and store as a new version")


st.title("Labels")
project = require_project()
info = round_banner(project, "Labels")
left, right = st.columns(2, gap="large")
with left:
    approved_section(project, info)
    round_trip_section(project, info)
with right:
    versions_section(project)
