"""Explanations of the released artifact: LIME, behind an interface each modality implements, and the report."""
