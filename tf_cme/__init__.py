"""tf-cme: Emotion Recognition in Speech using Cross-Modal Transfer in the Wild, in TensorFlow/Keras."""
__version__ = "0.1.0"
