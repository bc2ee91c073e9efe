"""Autoencoders, their backbones, decoder likelihoods and latent samplers.

``build_model`` is the one place that turns a job's model entry into a network; models never
switch on each other's names.
"""

from aebench.models.base import Autoencoder, Encoding, build_model, model_config

__all__ = ["Autoencoder", "Encoding", "build_model", "model_config"]
