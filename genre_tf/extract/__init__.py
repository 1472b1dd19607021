"""Every track of a dataset analysed once: the content-keyed cache, the process pool, Apache Beam, shards."""
