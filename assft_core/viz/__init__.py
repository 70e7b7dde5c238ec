"""Plotly figure builders (pure functions over numpy arrays and pandas frames).

Nothing here imports Streamlit. The figure builders read no store either: `case_data` loads a
project's cases, scores and maps, a page calls a builder and places the figure, so every figure
is also scriptable and testable.

Modules: `embedding` (2D map of the case embeddings), `coverage` (DKD coverage of the embedding),
`slices` (the slice viewer with label / prediction / entropy / ROI overlays), `curves` (learning
curves, round history, loss curves), `case_data` (the store and score-table reads behind the
Embedding and Viewer pages).
"""
