"""latentrec: LLM-based recommendation with latent reasoning (LatentR3, FLR), reproduced end to end."""

__version__ = "0.1.0"
