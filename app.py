"""bnviz: the router. One page per question, each a thin file in ``app_pages/``; no maths here."""

from __future__ import annotations

import logging

import streamlit as st

from app_pages.common import server

st.set_page_config(page_title="bnviz — batch norm explorer", page_icon=":material/bar_chart:", layout="wide")
server()  # once per process: the memory budget all visitors share, the reports' cache, the allocator tuned

PAGES = {  # one page per question (../shared/PRODUCT.md), grouped as a reader meets them
    "Batch norm": [
        st.Page("app_pages/layer.py", title="Layer explorer", icon=":material/biotech:", default=True),
        st.Page("app_pages/network.py", title="BatchNorm2d vs 1d in a CNN", icon=":material/layers:",
                url_path="network"),
    ],
    "Batch norm in training": [
        st.Page("app_pages/training.py", title="Why batch norm helps", icon=":material/trending_up:",
                url_path="training"),
        st.Page("app_pages/eval_gap.py", title="Worse in eval than in train", icon=":material/rule:",
                url_path="eval-gap"),
    ],
    "Beyond one layer": [
        st.Page("app_pages/family.py", title="The normalization family", icon=":material/diversity_3:",
                url_path="family"),
        st.Page("app_pages/data_parallel.py", title="Across devices", icon=":material/hub:", url_path="data-parallel"),
        st.Page("app_pages/inference.py", title="Fold and freeze for inference", icon=":material/ac_unit:",
                url_path="inference"),
    ],
    "Your model": [
        st.Page("app_pages/doctor.py", title="Check its batch norms", icon=":material/stethoscope:",
                url_path="doctor"),
    ],
}

page = st.navigation(PAGES)
try:
    page.run()
except Exception as exc:  # a last line of defence: a clear message, never a traceback (that goes to the log)
    logging.getLogger("bnviz").exception("a page failed")
    st.error(f"bnviz could not draw this view ({type(exc).__name__}). Please report the link.")
