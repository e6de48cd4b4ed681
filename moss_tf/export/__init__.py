"""Export for TF Serving: a trained network as a versioned SavedModel (:mod:`.saved_model`).

Importing this package does not start TensorFlow; ``moss_tf.export.saved_model`` does.
"""
