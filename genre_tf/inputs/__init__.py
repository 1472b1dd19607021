"""A run's examples as its model reads them: the input recipe, tf.data pipelines, augmentation, Keras layers."""
