"""Slice viewer: one axial / coronal / sagittal slice with label, prediction, entropy and ROI overlays.

Orientation (documented once, used everywhere):

- Arrays are brought to RAS+ voxel order first (nibabel's `io_orientation` of the affine):
  axis 0 runs from the patient's Left to Right, axis 1 from Posterior to Anterior, axis 2 from
  Inferior to Superior. Without an affine the array is taken to be RAS already.
- axial = index along axis 2, coronal = along axis 1, sagittal = along axis 0.
- Axial: anterior up. Coronal: superior up. Sagittal: superior up, anterior on the left
  (the patient faces left, as in most clinical viewers).
- Radiological convention (default) for axial and coronal: the patient's LEFT is on the
  viewer's RIGHT, as if facing the patient. Neurological convention: patient's left on the
  viewer's left. Axis titles carry the direction letters, e.g. "R ← x (mm) → L".
- Plot coordinates are in mm from the first voxel's centre (index × spacing), with equal
  axis scaling, so anisotropic voxels keep their true aspect ratio.

Overlays are drawn on exactly the image's pixel grid (same x/y vectors, same decimation), so
they line up with the image by construction; tests check it against a known cube.
"""

from __future__ import annotations

import enum
import math

import nibabel as nib
import numpy as np
import plotly.graph_objects as go

# Longest displayed side in pixels; larger slices are decimated by an integer stride so a figure
# stays a few hundred kB on the wire.
MAX_DISPLAY_PIXELS = 256
# Intensity window: these percentiles of the volume map to black / white.
WINDOW_PERCENTILES = (0.5, 99.5)
IGNORE_LABEL = 255  # pseudo-label "ignore" value (METHOD.md §4), drawn grey
CLASS_COLOURS = (
    "#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00",
    "#ffff33", "#a65628", "#f781bf", "#66c2a5", "#fc8d62",
)  # fmt: skip
IGNORE_COLOUR = "#bdbdbd"
ROI_COLOUR = "#00e5ff"


class Axis(str, enum.Enum):
    """Slicing plane; the value names the array axis (after RAS reorientation) it indexes."""

    AXIAL = "axial"  # along axis 2 (I→S)
    CORONAL = "coronal"  # along axis 1 (P→A)
    SAGITTAL = "sagittal"  # along axis 0 (L→R)


class Convention(str, enum.Enum):
    """Left/right display of axial and coronal slices."""

    RADIOLOGICAL = "radiological"  # patient's left on the viewer's right
    NEUROLOGICAL = "neurological"  # patient's left on the viewer's left


_SLICE_AXIS = {Axis.SAGITTAL: 0, Axis.CORONAL: 1, Axis.AXIAL: 2}
# For each plane: (array axis shown horizontally, array axis shown vertically).
_DISPLAY_AXES = {Axis.AXIAL: (0, 1), Axis.CORONAL: (0, 2), Axis.SAGITTAL: (1, 2)}
_AXIS_LETTERS = {0: ("L", "R"), 1: ("P", "A"), 2: ("I", "S")}


def to_ras(volume: np.ndarray, affine: np.ndarray | None) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    """Reorder / flip a volume's axes to RAS+ (no resampling).

    Args:
        volume: (X, Y, Z) array in the affine's voxel order.
        affine: (4, 4) voxel → world (RAS, mm), or None if `volume` is RAS already.

    Returns:
        The RAS+ view of the volume and its voxel sizes in mm (None without an affine).

    Raises:
        ValueError: if the volume is not 3D or the affine is not (4, 4).
    """
    if volume.ndim != 3:
        raise ValueError(f"slice viewer: expected a 3D volume, got shape {volume.shape} (pass image[c] for channel c)")
    if affine is None:
        return volume, None
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"slice viewer: affine must be (4, 4), got {affine.shape}")
    ornt = nib.orientations.io_orientation(affine)
    transform = nib.orientations.ornt_transform(ornt, nib.orientations.axcodes2ornt("RAS"))
    sizes = nib.affines.voxel_sizes(affine)
    ras_sizes = np.empty(3)
    ras_sizes[transform[:, 0].astype(int)] = sizes  # input axis i becomes RAS axis transform[i, 0]
    return nib.orientations.apply_orientation(volume, transform), tuple(float(s) for s in ras_sizes)


def n_slices(shape: tuple[int, int, int], axis: Axis | str, affine: np.ndarray | None = None) -> int:
    """Number of slices along `axis` of a volume of `shape` (for a page's slider).

    Raises:
        ValueError: on an unknown axis or a non-3D shape.
    """
    if len(shape) != 3:
        raise ValueError(f"n_slices: expected a 3D shape, got {shape}")
    axis = Axis(axis)
    if affine is None:
        return int(shape[_SLICE_AXIS[axis]])
    ornt = nib.orientations.io_orientation(np.asarray(affine, dtype=np.float64))
    transform = nib.orientations.ornt_transform(ornt, nib.orientations.axcodes2ornt("RAS"))
    source_axis = int(np.flatnonzero(transform[:, 0] == _SLICE_AXIS[axis])[0])
    return int(shape[source_axis])


def slice_figure(
    image: np.ndarray,
    *,
    axis: Axis | str,
    index: int,
    affine: np.ndarray | None = None,
    spacing_mm: tuple[float, float, float] | None = None,
    label: np.ndarray | None = None,
    prediction: np.ndarray | None = None,
    entropy: np.ndarray | None = None,
    roi: np.ndarray | None = None,
    opacity: float = 0.4,
    convention: Convention | str = Convention.RADIOLOGICAL,
    window: tuple[float, float] | None = None,
    class_names: dict[int, str] | None = None,
) -> go.Figure:
    """One slice of a volume with optional overlays (see the module docstring for orientation).

    Traces, bottom to top: the image (grayscale, uint8 after windowing), the label, the
    prediction (categorical colours fixed per class, background transparent, 255 = ignore in
    grey, a legend entry per class in the slice), the entropy heatmap (transparent at 0, colour
    bar 0–1), and the ROI outline (iso-line at 0.5 of the mask, along the mask's pixel edges).

    Example:
        >>> import numpy as np
        >>> vol = np.zeros((32, 32, 32)); vol[8:16, 8:16, 8:16] = 1
        >>> fig = slice_figure(vol, axis="axial", index=10, spacing_mm=(1, 1, 2), label=vol.astype(np.uint8))
        >>> [t.name for t in fig.data]
        ['image', 'label', 'label: class 1']

    Args:
        image: (X, Y, Z) intensities in the affine's voxel order (RAS when `affine` is None).
        axis: "axial", "coronal" or "sagittal".
        index: slice index along that axis in RAS order (0 = most left / posterior / inferior).
        affine: (4, 4) voxel → world (mm); gives the orientation and the spacing.
        spacing_mm: (3,) voxel size in mm of a RAS array; only without `affine` (default 1 mm).
        label: (X, Y, Z) reference class indices, same grid as `image`.
        prediction: (X, Y, Z) predicted class indices (argmax), same grid.
        entropy: (X, Y, Z) normalised voxel entropy `H` in [0, 1] (METHOD.md §2), same grid.
        roi: (X, Y, Z) bool ASD ROI mask (METHOD.md §2), same grid.
        opacity: opacity of the label / prediction / entropy overlays, in [0, 1].
        convention: left/right display of axial and coronal slices.
        window: (low, high) intensities mapped to black / white; default the volume's
            0.5 / 99.5 percentiles.
        class_names: class index → name for the legend (default "class k").

    Returns:
        The figure; x/y in mm, equal scaling.

    Raises:
        ValueError: on a bad axis, an out-of-range index, an overlay of another shape, label
            values outside [0, 255], both `affine` and `spacing_mm`, or an opacity outside [0, 1].
    """
    axis, convention = Axis(axis), Convention(convention)
    if affine is not None and spacing_mm is not None:
        raise ValueError("slice_figure: pass either affine or spacing_mm (the affine carries the spacing)")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"slice_figure: opacity must be in [0, 1], got {opacity}")
    volume, spacing = to_ras(np.asarray(image), affine)
    spacing = spacing or tuple(float(s) for s in (spacing_mm or (1.0, 1.0, 1.0)))
    overlays = {"label": label, "prediction": prediction, "entropy": entropy, "roi": roi}
    for name, overlay in overlays.items():
        if overlay is not None and np.shape(overlay) != np.shape(image):
            raise ValueError(f"slice_figure: {name} has shape {np.shape(overlay)}, image {np.shape(image)}: same grid needed")
    depth = volume.shape[_SLICE_AXIS[axis]]
    if not 0 <= index < depth:
        raise ValueError(f"slice_figure: {axis.value} index {index} outside [0, {depth - 1}]")

    h_axis, v_axis = _DISPLAY_AXES[axis]
    stride = max(1, math.ceil(max(volume.shape[h_axis], volume.shape[v_axis]) / MAX_DISPLAY_PIXELS))
    x = np.arange(0, volume.shape[h_axis], stride) * spacing[h_axis]
    y = np.arange(0, volume.shape[v_axis], stride) * spacing[v_axis]

    def plane(vol: np.ndarray) -> np.ndarray:
        """(rows = vertical axis, cols = horizontal axis) of the slice, decimated."""
        cut = np.take(vol, index, axis=_SLICE_AXIS[axis])  # 2D, axes in (h_axis, v_axis) order
        return cut.T[::stride, ::stride]

    lo, hi = window if window is not None else _percentile_window(volume)
    gray = np.clip((plane(volume).astype(np.float32) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    fig = go.Figure(
        go.Heatmap(
            z=np.round(gray * 255).astype(np.uint8),
            x=x,
            y=y,
            colorscale="Gray",
            zmin=0,
            zmax=255,
            showscale=False,
            name="image",
            hovertemplate="x %{x:.1f} mm, y %{y:.1f} mm<extra></extra>",
        )
    )
    for name in ("label", "prediction"):
        if overlays[name] is not None:
            cut = plane(to_ras(np.asarray(overlays[name]), affine)[0])
            fig.add_traces(_label_traces(cut, x, y, name, opacity, class_names))
    if entropy is not None:
        fig.add_trace(_entropy_trace(plane(to_ras(np.asarray(entropy), affine)[0]), x, y, opacity))
    if roi is not None:
        mask = plane(to_ras(np.asarray(roi, dtype=bool), affine)[0]).astype(np.uint8)
        fig.add_trace(
            go.Contour(
                z=mask,
                x=x,
                y=y,
                name="ROI",
                contours={"start": 0.5, "end": 0.5, "size": 1, "coloring": "lines"},
                line={"color": ROI_COLOUR, "width": 2},
                colorscale=[[0, ROI_COLOUR], [1, ROI_COLOUR]],
                showscale=False,
                hoverinfo="skip",
            )
        )
    _layout(fig, axis, convention, h_axis, v_axis, index, depth)
    return fig


def _percentile_window(volume: np.ndarray) -> tuple[float, float]:
    # A 3D strided subsample (~200k voxels, no copy of the full volume) keeps this cheap on a
    # 512³ CT and is plenty for two percentiles.
    step = max(1, math.ceil((volume.size / 200_000) ** (1 / 3)))
    sample = volume[::step, ::step, ::step].astype(np.float32)
    lo, hi = np.percentile(sample, WINDOW_PERCENTILES)
    return float(lo), (float(hi) if hi > lo else float(lo) + 1.0)


def _label_colour(value: int) -> str:
    if value == 0:
        return "rgba(0,0,0,0)"  # background transparent
    return IGNORE_COLOUR if value == IGNORE_LABEL else CLASS_COLOURS[(value - 1) % len(CLASS_COLOURS)]


def _label_traces(
    cut: np.ndarray, x: np.ndarray, y: np.ndarray, name: str, opacity: float, class_names: dict[int, str] | None
) -> list[go.Heatmap | go.Scatter]:
    """Categorical overlay on the class values themselves (uint8; hover shows the value), plus
    one legend entry per class present in the slice; a class keeps its colour on every slice."""
    if cut.size and (cut.min() < 0 or cut.max() > IGNORE_LABEL):
        raise ValueError(f"slice_figure: {name} values must be class indices in [0, 255], got {cut.min()}..{cut.max()}")
    cut = cut.astype(np.uint8)
    top = max(int(cut.max()), 1)
    scale = []  # piecewise constant: value v owns [v, v + 1) of [0, top + 1]
    for v in range(top + 1):
        scale += [[v / (top + 1), _label_colour(v)], [(v + 1) / (top + 1), _label_colour(v)]]
    traces: list[go.Heatmap | go.Scatter] = [
        go.Heatmap(
            z=cut,
            x=x,
            y=y,
            zmin=-0.5,
            zmax=top + 0.5,
            colorscale=scale,
            showscale=False,
            opacity=opacity,
            name=name,
            hovertemplate=f"{name}: %{{z}}<extra></extra>",
        )
    ]
    for v in (int(c) for c in np.unique(cut) if c != 0):
        label = "ignore" if v == IGNORE_LABEL else (class_names or {}).get(v, f"class {v}")
        traces.append(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                marker={"symbol": "square", "size": 12, "color": _label_colour(v)},
                name=f"{name}: {label}",
                legendgroup=name,
            )
        )
    return traces


def _entropy_trace(cut: np.ndarray, x: np.ndarray, y: np.ndarray, opacity: float) -> go.Heatmap:
    """Entropy heatmap: alpha grows with H, so certain voxels leave the image visible."""
    inferno = ("#000004", "#420a68", "#932667", "#dd513a", "#fca50a", "#fcffa4")
    scale = []
    for i, colour in enumerate(inferno):
        t = i / (len(inferno) - 1)
        r, g, b = (int(colour[k : k + 2], 16) for k in (1, 3, 5))
        scale.append([t, f"rgba({r},{g},{b},{t:.2f})"])
    return go.Heatmap(
        z=np.clip(cut.astype(np.float32), 0.0, 1.0),
        x=x,
        y=y,
        zmin=0.0,
        zmax=1.0,
        colorscale=scale,
        opacity=opacity,
        name="entropy",
        colorbar={"title": {"text": "entropy H"}, "tickvals": [0, 0.5, 1]},
        hovertemplate="entropy %{z:.2f}<extra></extra>",
    )


def _layout(fig: go.Figure, axis: Axis, convention: Convention, h_axis: int, v_axis: int, index: int, depth: int) -> None:
    # Axis 0 runs L→R, so radiological display (patient's left on the viewer's right) reverses
    # the x axis; sagittal's x is axis 1 (P→A), reversed to put anterior on the left.
    reverse_x = (h_axis == 0 and convention is Convention.RADIOLOGICAL) or h_axis == 1
    low, high = _AXIS_LETTERS[h_axis]
    left, right = (high, low) if reverse_x else (low, high)
    v_low, v_high = _AXIS_LETTERS[v_axis]
    fig.update_layout(
        title=f"{axis.value} slice {index} / {depth - 1} ({convention.value if h_axis == 0 else 'anterior left'})",
        margin={"l": 10, "r": 10, "t": 40, "b": 80},  # room below for the class legend
        plot_bgcolor="black",
        legend={"orientation": "h", "x": 0.0, "y": -0.1, "yanchor": "top"},
    )
    fig.update_xaxes(
        title={"text": f"{left} ← mm → {right}"},
        autorange="reversed" if reverse_x else True,
        showgrid=False,
        zeroline=False,
        constrain="domain",
    )
    fig.update_yaxes(
        title={"text": f"{v_low} ← mm → {v_high}"},
        scaleanchor="x",
        scaleratio=1,
        showgrid=False,
        zeroline=False,
        constrain="domain",
    )
