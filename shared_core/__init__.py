"""extradim's shared diffusion core: schedules, forward process, losses, samplers, guidance,
likelihood, the DiT backbone and the training engine. Modality-agnostic: it knows tensors of any
rank, never frames, points or rays."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("extradim")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
