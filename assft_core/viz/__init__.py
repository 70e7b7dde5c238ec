"""Plotly figure builders (pure functions over numpy arrays and pandas frames).

Nothing here imports Streamlit or reads a store: `assft_core.session.views` loads a project's
cases, scores and maps, a page calls a builder and places the figure, so every figure is also
scriptable and testable.

Modules: `embedding` (2D map of the case embeddings), `coverage` (DKD coverage of the embedding),
`slices` (the slice viewer with label / prediction / entropy / ROI overlays), `curves` (learning
curves, round history, loss curves).
"""
