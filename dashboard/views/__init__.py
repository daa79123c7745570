"""One module per page: a ``ViewContext`` and the user's choices in, figures, tables and captions out, as
plain dataclasses (no Streamlit). The pages lay these out with widgets, the report as HTML pages, so the
two show the same numbers under the same titles."""
