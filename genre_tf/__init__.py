"""genre_tf: music genre classification from audio folders to trained Keras 3 models."""

__version__ = "0.1.0"

import os as _os

# TensorFlow's C++ start-up chatter (CPU instruction sets, oneDNN notes) buries the progress and
# errors users need; warnings and errors still show.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
