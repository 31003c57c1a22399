"""CT volumes from file to metric: readers, shards, tf.data, slice-by-slice inference, metrics, phantoms.

``layouts`` tells a cohort folder's layout (``cases``: the zoo's ``images/`` + ``labels/`` and LiTS;
``dataset_json``: the Decathlon's and nnU-Net v2's raw);
``volumes`` reads NIfTI/MHA/NRRD/DICOM with SimpleITK into canonical arrays
(``volume_checks``: what SimpleITK's readers let through, refused);
``shards`` writes one TFRecord per case, a folder all or nothing; ``pipeline`` streams them through
tf.data; ``splits`` holds cases out; ``inference`` labels whole volumes
(``sliding``: Gaussian sliding window and mirroring per slice; ``ensemble``:
a run's or a cross-validation's models and the options their training
implies; ``postprocess``: the largest-connected-component rule; ``predictions``: the files
``zoo predict`` writes, a folder resumably);
``metrics`` scores them; ``synthetic`` writes phantom cohorts.
May import: ``common.errors``, ``common.atomic``, ``common.tables``,
``common.registry`` (``ensemble`` loads saved models through it) and each
other in that order of flow; never ``train``, ``serve``, ``studies``, ``cli``
or a model package.
"""
