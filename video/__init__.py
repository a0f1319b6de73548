"""extradim.video: text-to-clip diffusion (time as an extra dimension). Imports only shared_core."""

__all__: list[str] = []
