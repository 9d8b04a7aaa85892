"""Streamlit UI helpers of the explorer (the app itself: ``streamlit run explorer/Home.py``)."""
