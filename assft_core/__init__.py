"""ASSFT Studio engine: adapt a medical vision foundation model with active learning and
selective semi-supervised fine-tuning (Yang, Marcus, Sotiras, arXiv:2509.10784; METHOD.md).

Importable without Streamlit; the dashboard and the `assft` command line are thin front ends.
"""

__version__ = "0.1.0"
