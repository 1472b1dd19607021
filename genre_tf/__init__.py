"""genre_tf: music genre classification from audio folders to trained Keras 3 models."""

__version__ = "0.1.0"
