"""The plain autoencoder: minimise the reconstruction term, nothing else."""

from __future__ import annotations

from aebench.models.base import Autoencoder


class AE(Autoencoder):
    """Plain autoencoder: reconstruction loss only."""
