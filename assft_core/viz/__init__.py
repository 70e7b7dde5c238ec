"""Plotly figure builders (pure functions over numpy arrays and pandas frames).

Nothing here imports Streamlit or reads the project store: a page loads the data, calls a
builder and places the figure, so every figure is also scriptable and testable.

Modules: `embedding` (2D map of the case embeddings), `coverage` (DKD coverage of the embedding),
`slices` (the slice viewer with label / prediction / entropy / ROI overlays), `curves` (learning
curves, round history, loss curves).
"""
