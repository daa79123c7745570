"""Agg2Exp Studio dashboard: data access, cohort filter, figures and export for the Streamlit pages.

Modules: ``config`` (which store), ``filters`` (cohort filter: validation, URL form, SQL),
``data`` (the only module that reads the store), ``analytics`` (pure table/matrix helpers),
``figures`` (Plotly builders), ``slices`` and ``surfaces`` (case viewer maths and 3D),
``export`` (PNG/SVG/PDF/CSV downloads), ``state`` (URL <-> widget state) and ``ui``
(sidebar and page scaffolding). Pages under ``pages/`` hold layout only.
"""
