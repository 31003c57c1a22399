"""Keras-only building blocks shared by more than one package: losses and tensor ops.

Everything here imports ``keras``, ``keras.ops`` and ``numpy`` only (never
TensorFlow, never another part of ``common``), so the model packages may
import it and still build, train and load under Keras' JAX backend (SPEC,
"Shared conventions"). Whatever one model package alone needs stays in that
package.
"""
