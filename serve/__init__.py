"""The online model server: the production alias's served variant behind the Open Inference Protocol (KServe V2 REST).

Start it with ``python -m serve`` (``make serve-model``); see :mod:`serve.app` for the endpoints.
"""
