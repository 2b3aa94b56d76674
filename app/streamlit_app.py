"""Fusion Tuner dashboard entry point: ``streamlit run app/streamlit_app.py``.

Options go after ``--``: ``--logs PATH`` opens those logs instead of the bundled sample;
``--interactive-rows N`` (default 1,000,000; 0: never) is the size above which the
Distributions, Tune and Pareto pages work on a seeded sample of whole requests.
"""

import sys
from pathlib import Path

# NOTE: `streamlit run` puts only app/ on sys.path; the pages import `app` and `fusion`
# from the repository root.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

import fusion  # noqa: E402
from app import sidebar, state  # noqa: E402

st.set_page_config(page_title="Fusion Tuner", page_icon=":material/tune:", layout="wide")
try:
    state.launch_options()
except fusion.FusionError as exc:
    st.error(f"{exc}")
    st.stop()
page = st.navigation([
    st.Page("views/data.py", title="Data", icon=":material/table:", default=True),
    st.Page("views/distributions.py", title="Distributions", icon=":material/bar_chart:"),
    st.Page("views/tune.py", title="Tune", icon=":material/tune:"),
    st.Page("views/pareto.py", title="Pareto", icon=":material/scatter_plot:"),
    st.Page("views/export.py", title="Export", icon=":material/download:"),
])
sidebar.render()
page.run()
