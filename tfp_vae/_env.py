"""Make `tensorflow` resolve Keras to tf_keras before it is first imported.

tfp.layers only works with Keras 2 (`tf_keras`); TensorFlow reads this variable once, at import.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
