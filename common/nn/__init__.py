"""Keras-only building blocks shared by more than one package.

``losses`` (CE + Dice), ``ops`` (bilinear upsampling, BatchNorm of the
PyTorch/Torch originals, shape checks), ``optimizers`` (Torch's RMSprop and
SGD rules), ``initializers`` (PyTorch's default initialisation) and
``callbacks`` (the non-finite-loss stop, a history that never repeats an
epoch, resume state written whole) and ``built`` (``BuiltModel``: a saved
model names the builder and arguments that made it).

Everything here imports ``keras``, ``keras.ops`` and ``numpy`` only (never
TensorFlow, never another part of ``common``), so the model packages may
import it and still build, train and load under Keras' JAX backend (SPEC,
"Shared conventions"). Whatever one model package alone needs stays in that
package.
"""
