"""Human pose data: the MPII facts and PCKh (``mpii``), whole-image checks (``images``), crops and heatmaps
(``data``), evaluation, synthetic figures.

``mpii`` is the one place for joint order, left/right pairs, limbs and PCKh.
``evaluate`` decodes a model's heatmaps through the registry entry's
``keypoints``. May import: ``common.errors``, ``common.atomic``,
``common.tables``, ``common.registry`` (evaluation only); never ``train``,
``serve``, ``studies``, ``cli`` or a model package.
"""
