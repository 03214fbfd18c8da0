"""Training stage: the model zoo, the data module over a snapshot, the Lightning module and fit."""
