"""Checkpoint converters: the originals' released weights into the zoo's models (``zoo convert``).

One module per source, each reading the original's own file layout and
mapping every tensor by name onto a model the registry builds:

    hourglass   princeton-vl's ``pytorch_stacked_hourglass`` checkpoint (``torch.save``) -> the hourglass or ACNN
    tri_cnn     Wetteland et al.'s TRI-CNN Keras-2 HDF5 weights -> TRI-AL's ``tri_cnn``

A converter consumes every tensor of the file or names the one it cannot
place, and writes its ``.keras`` file atomically (nothing is written on an
error). It may import the registry, ``errors`` and ``atomic``; reading a
PyTorch file needs PyTorch (``pip install -e .[convert]``), imported only
when such a file is read.
"""
