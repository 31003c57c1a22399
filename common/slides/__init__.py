"""Whole slides for TRI-AL: OpenSlide reading, QuPath annotations, triplet shards and pools, synthetic slides.

``reader`` opens slides and reads tiles at a magnification; ``annotations``
holds the tissue classes and reads GeoJSON polygons; ``triplets`` writes one
shard per slide and loads per-class pools split by slide; ``synthetic``
writes two-lab pyramid TIFFs. May import: ``common.errors``, ``common.atomic``
and each other; never ``train``, ``serve``, ``studies``, ``cli`` or a model package.
"""
