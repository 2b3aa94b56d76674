"""The Fusion Tuner dashboard (``streamlit run app/streamlit_app.py``)."""
