"""What a track's audio becomes: decoding, the feature table, log-mel images, musicnn patches, scalers.

No TensorFlow here: extraction workers and `prepare` import these modules and start fast.
"""
