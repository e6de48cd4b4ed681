"""Data: folder layouts, image decoding, rain synthesis and tf.data pipelines."""
