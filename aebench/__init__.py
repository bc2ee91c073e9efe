"""aebench: a benchmark and evaluation suite for generative autoencoders.

Importing the package is cheap on purpose (no torch): the command line lists registries, validates
suites and prints help without paying for the heavy stack.
"""

__version__ = "0.1.0"

from aebench.errors import AebenchError, SuiteError  # noqa: E402
from aebench.registry import (  # noqa: E402
    BACKBONES,
    DATASETS,
    EXTRACTORS,
    LAUNCHERS,
    LIKELIHOODS,
    METRICS,
    MODELS,
    OPTIMIZERS,
    SAMPLERS,
    Registry,
)

__all__ = [
    "__version__",
    "AebenchError",
    "SuiteError",
    "Registry",
    "MODELS",
    "METRICS",
    "DATASETS",
    "BACKBONES",
    "SAMPLERS",
    "LAUNCHERS",
    "LIKELIHOODS",
    "OPTIMIZERS",
    "EXTRACTORS",
]
