"""Shared data, training, evaluation and export code of the zoo (TensorFlow lives here)."""
