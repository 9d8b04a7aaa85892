"""Core library of the KD-FMV explorer (no Streamlit imports)."""
