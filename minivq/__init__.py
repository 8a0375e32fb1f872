"""minivq: a from-scratch NumPy/CuPy VQ-VAE + transformer that learns to speak digits."""
__version__ = "0.1.0"
