"""Lepton Pipelines flows: each file wires tasks; no numerics live here."""
