"""A training run: its config, the loop that drives the actors (train.py), offline runs (SFT,
DPO), its folder, checkpoints, metrics, display, plots and exports. Above the actors."""
