"""extradim.threed: text-to-point-cloud diffusion, score distillation and mesh export.
Imports only shared_core."""

__all__: list[str] = []
