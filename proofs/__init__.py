"""Derivations of the claims C1-C14 of docs/theory.md: one ``pNN_slug.md`` + ``pNN_slug.py`` (sympy) per claim.

The modules import only sympy and the standard library. Each exposes small builders of the key
expressions (taking ``alpha``, ``sigma`` as sympy callables, generic functions by default) and
``test_*`` checks collected by pytest. ``tests/test_proofs_bridge.py`` lambdifies the builders with
the concrete schedules of :func:`proofs.p01_continuity.schedule` and compares them with the torch
code. The index is ``proofs/README.md``.
"""
