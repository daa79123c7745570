"""Knowledge graph: for every target class, arrows from its k most important source RoIs."""
import streamlit as st

from dashboard import ui
from dashboard.views import knowledge_graph
from dashboard.widgets import export, state

ctx = ui.context()
ui.page_header("Knowledge graph", ctx, intro="Directed graph b → a of the top-k source RoIs of every target "
               "class (cohort mean of the absolute mass). Arrow width ~ mass; node size ~ self mass e(a → a), "
               "which is left out of the arrows. Colours: cardiovascular red, muscle yellow, bone blue, organ grey, "
               "pathology black.")

controls = st.columns([3, 2, 1])
k = state.slider("Sources per target (k)", "k", 1, 8, 3, 1, integer=True, what="k", container=controls[0])
min_mass = state.slider("Minimum mass of an edge", "min_mass", 0.0, 0.5, 0.0, 0.01, what="mass",
                        container=controls[1], help="Edges lighter than this are left out (0: the top k only).")
background = state.toggle("Include background", "background", default=False, container=controls[2],
                          help="The background RoI is a source of every class; leaving it out shows the anatomy.")
shown = knowledge_graph.knowledge_graph(ctx, int(k), float(min_mass), background)
if shown.empty:
    st.info(shown.empty)
    st.stop()
export.show_figure(shown.figure, ctx.name_parts("knowledge-graph", f"top{k}", "with-background" if background else ""),
                   "graph")
with st.expander("Edges as a table"):
    export.show_table(shown.edges, ctx.name_parts("knowledge-graph-edges", f"top{k}"), "graph-table")
