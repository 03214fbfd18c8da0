"""Explanations of the released artifact: LIME (images now; the interface takes tabular explainers too)."""
