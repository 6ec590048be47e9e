"""sammflow dashboard: routes to the pages in app_pages/ and owns the shared sidebar.

Run with ``streamlit run app.py``. With nothing configured it opens a generated demo
dataset (created on first run in the cache folder); ``SAMMFLOW_DATA`` and
``SAMMFLOW_ANNOTATIONS`` point it at a real dataset of any kind (SAMM, CASME II, SMIC,
CAS(ME)³ A, MMEW), and ``SAMMFLOW_ROOTS`` lists the folders a page user may open or export to
(see ``sammflow.access``: what a page user can reach). The sidebar also opens a video file
with its events, or a composite of one dataset per kind.
"""

from pathlib import Path

import streamlit as st

from sammflow import ui

# a local image (static/make_favicon.py draws it): an emoji or :material/…: icon is fetched by
# the browser from a CDN, which fails offline
FAVICON = Path(__file__).resolve().parent / "static" / "favicon.png"
st.set_page_config(page_title="sammflow", page_icon=str(FAVICON), layout="wide")

page = st.navigation([
    st.Page("app_pages/overview.py", title="Overview", icon=":material/table_chart:", default=True),
    st.Page("app_pages/alignment.py", title="Alignment diagnostics", icon=":material/center_focus_strong:"),
    st.Page("app_pages/grid.py", title="Normalized grid", icon=":material/grid_view:"),
    st.Page("app_pages/flow.py", title="Flow samples", icon=":material/air:"),
    st.Page("app_pages/gifs.py", title="Onset→apex GIFs", icon=":material/animation:"),
    st.Page("app_pages/export.py", title="Batch export", icon=":material/download:"),
    st.Page("app_pages/recognition.py", title="Recognition check", icon=":material/model_training:"),
])
# The sidebar shows any dataset problem with st.error; a page only runs on a usable dataset.
# A page's unexpected error is an st.error naming it; the traceback goes to the server log.
if ui.sidebar() is not None:
    ui.run_page(page)
