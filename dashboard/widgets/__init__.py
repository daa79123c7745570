"""Streamlit widgets shared by pages: URL state, export buttons, the build banner."""
