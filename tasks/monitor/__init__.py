"""Monitoring stage: the release's reference, Evidently drift of production windows against it, and events."""
