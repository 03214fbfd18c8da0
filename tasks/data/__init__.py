"""Data stage: sources, the input contract, validation with quarantine, split and the versioned snapshot.

Importing a stage package imports nothing else (configs stay light); import the module you need.
"""
