"""Outlier synthesis: k-NN boundary embeddings (DreamOOD), forward diffusion, Stable Diffusion."""
