"""Slice maths, surfaces and the artefact format the case viewer reads (no Streamlit)."""
