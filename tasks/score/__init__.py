"""Scoring stage: inputs (folders, s3:// prefixes), inference with a released variant, the monitoring row of
each scored input, and the production logs those rows are written to."""
