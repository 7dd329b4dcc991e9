"""The C-NMC dashboard: `streamlit run app.py`. Lists the pages; the Overview is the home page.

Every page reads the studies under the artifacts root ($CNMC_ARTIFACTS, else ./artifacts) through
the read model `cnmc_core.dashboard`; nothing here trains or writes (the demo build runs in its own process).
"""

from pathlib import Path

import streamlit as st

from views._ui import APP_NAME

# Served by the app itself (as a data URL): no icon or font is fetched from a third party.
ICON = Path(__file__).resolve().parent / "assets" / "icon.png"
WORDMARK = ICON.with_name("wordmark.svg")  # the app's name, APP_NAME, as the sidebar's heading

# Each page titles its browser tab "<page> · <APP_NAME>" (views/_ui.start); this is the title until it does.
st.set_page_config(page_title=APP_NAME, page_icon=str(ICON), layout="wide")

PAGES = [
    st.Page("views/1_Overview.py", title="Overview", icon="📊", default=True),
    st.Page("views/2_Confusion_matrices.py", title="Confusion matrices", icon="🔢",
            url_path="confusion"),
    st.Page("views/3_Training_curves.py", title="Training curves", icon="📈", url_path="training"),
    st.Page("views/4_Curves_and_calibration.py", title="Curves and calibration", icon="🎯",
            url_path="curves"),
    st.Page("views/9_Compare.py", title="Compare", icon="⚖️", url_path="compare"),
    st.Page("views/10_Feature_space.py", title="Feature space", icon="🗺️", url_path="feature-space"),
    st.Page("views/5_Grad-CAM_gallery.py", title="Grad-CAM gallery", icon="🔥",
            url_path="gradcam"),
    st.Page("views/6_Classify_a_cell.py", title="Classify a cell", icon="🔬", url_path="classify"),
    st.Page("views/7_Dataset.py", title="Dataset", icon="📁", url_path="dataset"),
    st.Page("views/8_About.py", title="About", icon="ℹ️", url_path="about"),
]

# The app's name heads the sidebar, above the pages (a section header would do it too, but Streamlit puts it
# inside the page list's <ul>, which screen readers and axe-core reject). The page icons are decoration:
# Streamlit marks them aria-hidden, so a screen reader says only the page's title.
st.logo(str(WORDMARK), size="large", icon_image=str(ICON))
st.navigation(PAGES).run()
