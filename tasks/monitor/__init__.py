"""Monitoring: per-image features, the release's reference, production logs, Evidently drift."""
