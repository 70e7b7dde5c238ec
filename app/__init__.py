"""ASSFT Studio's Streamlit dashboard: the entry script (`main.py`) and UI pieces shared by pages/."""
