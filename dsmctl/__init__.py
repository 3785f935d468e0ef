"""dsmctl: learn normalized image densities with dual score matching."""
__version__ = "0.1.0"
