"""Lepton Pipelines tasks, grouped by stage.

Each stage package holds plain typed functions (no Prefect, no boto3 in the
numerics) and a ``steps`` module with the thin Prefect ``@task`` wrappers that
flows call.
"""
