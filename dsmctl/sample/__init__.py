"""Sampling from a trained model: samplers, the generate loop, the sample files."""
