"""The package's own experiment kinds, one folder each.

A kind's folder holds everything the kind knows: ``__init__.py`` its ``registry.KindSpec`` (plain data: name,
help, the config fields it uses, an example config, its capabilities), ``result.py`` its result type with its
tables and text summary (NumPy), ``engine.py`` its engine entry (JAX) and ``figures.py`` its figures
(matplotlib). The machinery that every kind shares stays outside: plans, chunks, checkpoints and memory
estimates in ``l2rebound.experiments``, the store, the sweeps. Another package adds a kind the same way and
registers its spec under the entry-point group ``l2rebound.kinds`` (docs: "Add your own experiment").
"""
