"""The C-NMC dashboard: `streamlit run app.py`. Lists the pages; the Overview is the home page.

Every page reads the studies under the artifacts root ($CNMC_ARTIFACTS, else ./artifacts) through
the read model `cnmc_core.dashboard`; nothing here trains or writes (the demo build runs in its own process).
"""

import streamlit as st

st.set_page_config(page_title="C-NMC: transfer learning for leukemia cells", page_icon=":material/biotech:",
                   layout="wide")

PAGES = [
    st.Page("views/1_Overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("views/2_Confusion_matrices.py", title="Confusion matrices", icon=":material/grid_on:",
            url_path="confusion"),
    st.Page("views/3_Training_curves.py", title="Training curves", icon=":material/show_chart:", url_path="training"),
    st.Page("views/4_Curves_and_calibration.py", title="Curves and calibration", icon=":material/tune:",
            url_path="curves"),
    st.Page("views/9_Compare.py", title="Compare", icon=":material/compare_arrows:", url_path="compare"),
    st.Page("views/5_Grad-CAM_gallery.py", title="Grad-CAM gallery", icon=":material/local_fire_department:",
            url_path="gradcam"),
    st.Page("views/6_Classify_a_cell.py", title="Classify a cell", icon=":material/biotech:", url_path="classify"),
    st.Page("views/7_Dataset.py", title="Dataset", icon=":material/folder_open:", url_path="dataset"),
    st.Page("views/8_About.py", title="About", icon=":material/info:", url_path="about"),
]

st.navigation(PAGES).run()
