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
import functools
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
# The error view (`error_map`): code -> (name in the legend, colour).
FALSE_POSITIVE, FALSE_NEGATIVE, WRONG_CLASS = 1, 2, 3
ERROR_CLASSES = {
    FALSE_POSITIVE: ("false positive: predicted, not in the label", "#ff00ff"),
    FALSE_NEGATIVE: ("false negative: in the label, missed", "#ffd700"),
    WRONG_CLASS: ("wrong class: both foreground, classes differ", "#ffffff"),
}
# Entropy below this is left undrawn (the image shows through); above it an opaque sequential
# scale, dark violet at low H to yellow at H = 1 (plasma): no step of it is white or transparent.
ENTROPY_FLOOR = 0.05
ENTROPY_SCALE = "Plasma"


class LabelStyle(str, enum.Enum):
    """How the label overlay is drawn: filled like the prediction, or as an outline per class."""

    FILL = "fill"
    OUTLINE = "outline"


def error_map(label: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Voxel-wise disagreement of a prediction with a label, for the error view.

    Args:
        label: (X, Y, Z) reference class indices (255 = ignore: never an error).
        prediction: (X, Y, Z) predicted class indices, same grid.

    Returns:
        (X, Y, Z) uint8: 0 agree, `FALSE_POSITIVE` (predicted foreground on label background),
        `FALSE_NEGATIVE` (label foreground predicted as background), `WRONG_CLASS` (both
        foreground, different classes).

    Raises:
        ValueError: when the shapes differ.
    """
    label, prediction = np.asarray(label), np.asarray(prediction)
    if label.shape != prediction.shape:
        raise ValueError(f"error_map: label {label.shape} and prediction {prediction.shape} need the same grid")
    known = label != IGNORE_LABEL
    out = np.zeros(label.shape, dtype=np.uint8)
    out[known & (label == 0) & (prediction > 0)] = FALSE_POSITIVE
    out[known & (label > 0) & (prediction == 0)] = FALSE_NEGATIVE
    out[known & (label > 0) & (prediction > 0) & (label != prediction)] = WRONG_CLASS
    return out


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
    transform, ras_sizes = _ras_orientation(affine.tobytes())
    return nib.orientations.apply_orientation(volume, transform), ras_sizes


@functools.lru_cache(maxsize=64)
def _ras_orientation(affine_bytes: bytes) -> tuple[np.ndarray, tuple[float, float, float]]:
    """(3, 2) nibabel orientation transform to RAS+ and the RAS voxel sizes of a float64 (4, 4)
    affine's bytes. Cached: `io_orientation` is an SVD, and a figure reorients every overlay of
    every plane on every rerun with the same affine."""
    affine = np.frombuffer(affine_bytes, dtype=np.float64).reshape(4, 4)
    ornt = nib.orientations.io_orientation(affine)
    transform = nib.orientations.ornt_transform(ornt, nib.orientations.axcodes2ornt("RAS"))
    ras_sizes = np.empty(3)
    ras_sizes[transform[:, 0].astype(int)] = nib.affines.voxel_sizes(affine)  # input axis i -> RAS axis transform[i, 0]
    transform.setflags(write=False)  # shared by every caller
    return transform, (float(ras_sizes[0]), float(ras_sizes[1]), float(ras_sizes[2]))


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
    transform, _ = _ras_orientation(np.asarray(affine, dtype=np.float64).tobytes())
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
    errors: np.ndarray | None = None,
    opacity: float = 0.4,
    convention: Convention | str = Convention.RADIOLOGICAL,
    window: tuple[float, float] | None = None,
    class_names: dict[int, str] | None = None,
    label_style: LabelStyle | str = LabelStyle.FILL,
    entropy_colour_bar: bool = True,
    layout: dict | None = None,
) -> go.Figure:
    """One slice of a volume with optional overlays (see the module docstring for orientation).

    Traces, bottom to top: the image (grayscale, uint8 after windowing), the label, the
    prediction (categorical colours fixed per class, background transparent, 255 = ignore in
    grey, a legend entry per class in the slice), the error view (false positives / negatives,
    `error_map`), the entropy heatmap (undrawn below `ENTROPY_FLOOR`, an opaque sequential scale
    with its colour bar 0–1), and the ROI outline (iso-line at 0.5 of the mask). With
    `label_style="outline"` the label is drawn as one outline per class over the prediction's
    fill, so the two never blend into colours the legend does not have.

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
        errors: (X, Y, Z) `error_map(label, prediction)` codes, same grid.
        opacity: opacity of the label / prediction / entropy overlays, in [0, 1].
        convention: left/right display of axial and coronal slices.
        window: (low, high) intensities mapped to black / white; default the volume's
            0.5 / 99.5 percentiles.
        class_names: class index → name for the legend (default "class k").
        label_style: "fill" (as the prediction) or "outline" (one outline per class).
        entropy_colour_bar: draw the entropy's colour bar (off: one bar for several plots).
        layout: plotly layout settings set over the defaults, top-level keys replaced (e.g.
            `{"title": ..., "height": 600}`): given here rather than by `fig.update_layout`
            afterwards, which costs about as much as building the figure.

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
    overlays = {"label": label, "prediction": prediction, "entropy": entropy, "roi": roi, "errors": errors}
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
    traces: list[go.BaseTraceType] = [
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
    ]
    outline = LabelStyle(label_style) is LabelStyle.OUTLINE
    if label is not None and not outline:
        traces += _label_traces(plane(to_ras(np.asarray(label), affine)[0]), x, y, "label", opacity, class_names)
    if prediction is not None:
        cut = plane(to_ras(np.asarray(prediction), affine)[0])
        traces += _label_traces(cut, x, y, "prediction", opacity, class_names)
    if errors is not None:
        traces += _error_traces(plane(to_ras(np.asarray(errors), affine)[0]), x, y, opacity)
    if label is not None and outline:
        traces += _outline_traces(plane(to_ras(np.asarray(label), affine)[0]), x, y, class_names)
    if entropy is not None:
        traces.append(_entropy_trace(plane(to_ras(np.asarray(entropy), affine)[0]), x, y, opacity, entropy_colour_bar))
    if roi is not None:
        mask = plane(to_ras(np.asarray(roi, dtype=bool), affine)[0]).astype(np.uint8)
        traces.append(
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
        traces.append(_legend_line("ROI: predicted anatomy, dilated (ASD region)", ROI_COLOUR, "ROI"))
    # One constructor call: `update_layout` / `update_xaxes` on a figure with traces cost about
    # as much as building every trace (plotly's relayout machinery), and a slice move pays it.
    return go.Figure(data=traces, layout={**_layout(axis, convention, h_axis, v_axis, index, depth), **(layout or {})})


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


def _legend_line(name: str, colour: str, group: str) -> go.Scatter:
    """A legend entry drawn as a line (outlines), no data."""
    return go.Scatter(x=[None], y=[None], mode="lines", line={"color": colour, "width": 3}, name=name,
                      legendgroup=group)


def _outline_traces(cut: np.ndarray, x: np.ndarray, y: np.ndarray,
                    class_names: dict[int, str] | None) -> list[go.Contour | go.Scatter]:
    """The label as one outline per class present in the slice (iso-line at 0.5 of the class
    mask), each with a legend entry; the traces carry the class mask × class as `z`."""
    traces: list[go.Contour | go.Scatter] = []
    for v in (int(c) for c in np.unique(cut) if c != 0):
        colour = _label_colour(v)
        traces.append(go.Contour(
            z=((cut == v) * v).astype(np.uint8), x=x, y=y, name="label",
            contours={"start": v / 2, "end": v / 2, "size": 1, "coloring": "lines"},
            line={"color": colour, "width": 2}, colorscale=[[0, colour], [1, colour]], showscale=False,
            hoverinfo="skip", showlegend=False,
        ))
        name = "ignore" if v == IGNORE_LABEL else (class_names or {}).get(v, f"class {v}")
        traces.append(_legend_line(f"label: {name} (outline)", colour, "label"))
    return traces


def _error_traces(cut: np.ndarray, x: np.ndarray, y: np.ndarray, opacity: float) -> list[go.Heatmap | go.Scatter]:
    """The error view: a categorical heatmap of `error_map` codes and a legend entry per code present."""
    top = max(ERROR_CLASSES)
    scale = []
    for v in range(top + 1):
        colour = "rgba(0,0,0,0)" if v == 0 else ERROR_CLASSES[v][1]
        scale += [[v / (top + 1), colour], [(v + 1) / (top + 1), colour]]
    traces: list[go.Heatmap | go.Scatter] = [go.Heatmap(
        z=cut.astype(np.uint8), x=x, y=y, zmin=-0.5, zmax=top + 0.5, colorscale=scale, showscale=False,
        opacity=max(opacity, 0.6), name="errors", hovertemplate="error code %{z}<extra></extra>",
    )]
    for v in (int(c) for c in np.unique(cut) if c != 0):
        name, colour = ERROR_CLASSES[v]
        traces.append(go.Scatter(x=[None], y=[None], mode="markers", name=name, legendgroup="errors",
                                 marker={"symbol": "square", "size": 12, "color": colour,
                                         "line": {"color": "#555555", "width": 1}}))  # white stays visible
    return traces


def _entropy_trace(cut: np.ndarray, x: np.ndarray, y: np.ndarray, opacity: float, colour_bar: bool) -> go.Heatmap:
    """Entropy heatmap: an opaque sequential scale (dark violet → yellow), voxels below
    `ENTROPY_FLOOR` undrawn so certain voxels leave the image visible."""
    h = np.clip(cut.astype(np.float32), 0.0, 1.0)
    return go.Heatmap(
        z=np.where(h >= ENTROPY_FLOOR, h, np.nan),
        x=x,
        y=y,
        zmin=0.0,
        zmax=1.0,
        colorscale=ENTROPY_SCALE,
        opacity=opacity,
        name="entropy",
        showscale=colour_bar,
        colorbar={"title": {"text": "entropy H"}, "tickvals": [0, 0.5, 1], "thickness": 12},
        hovertemplate="entropy %{z:.2f}<extra></extra>",
        hoverongaps=False,
    )


def _layout(axis: Axis, convention: Convention, h_axis: int, v_axis: int, index: int, depth: int) -> dict:
    """The figure's layout: title, margins, legend, and the two axes in mm (equal scaling)."""
    # Axis 0 runs L→R, so radiological display (patient's left on the viewer's right) reverses
    # the x axis; sagittal's x is axis 1 (P→A), reversed to put anterior on the left.
    reverse_x = (h_axis == 0 and convention is Convention.RADIOLOGICAL) or h_axis == 1
    low, high = _AXIS_LETTERS[h_axis]
    left, right = (high, low) if reverse_x else (low, high)
    v_low, v_high = _AXIS_LETTERS[v_axis]
    return {
        "title": {"text": f"{axis.value} slice {index} / {depth - 1} ({convention.value if h_axis == 0 else 'anterior left'})"},
        "margin": {"l": 10, "r": 10, "t": 40, "b": 80},  # room below for the class legend
        "plot_bgcolor": "black",
        "legend": {"orientation": "h", "x": 0.0, "y": -0.1, "yanchor": "top"},
        "xaxis": {"title": {"text": f"{left} ← mm → {right}"}, "autorange": "reversed" if reverse_x else True,
                  "showgrid": False, "zeroline": False, "constrain": "domain"},
        "yaxis": {"title": {"text": f"{v_low} ← mm → {v_high}"}, "scaleanchor": "x", "scaleratio": 1,
                  "showgrid": False, "zeroline": False, "constrain": "domain"},
    }
