"""Test helpers that stand up real infrastructure (a one-node SLURM cluster)."""
