"""python -m genre_tf COMMAND [ARGUMENTS]: the `genre-tf` console script."""

from genre_tf.cli import main

main()
