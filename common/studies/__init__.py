"""The papers' studies and pictures: U-Transformer ablations and attention maps, ACNN pose pictures, TRI-AL, the demo.

The top floor: a study may import every other wing and the model packages
themselves (for what only one paper has, e.g. MHCA layers or TRI-AL's
active-learning loop). Nothing but ``cli`` imports a study.
"""
