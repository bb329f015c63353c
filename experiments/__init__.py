"""Studies that regenerate their tables and figures from the package: ``python -m experiments.eNN_name.run``.

Each study folder holds ``run.py`` (``--quick`` for the tests' size, ``--out DIR``), the ``README.md`` it
writes (question, command, tables, figures, reading), ``results.json`` and the figures. See README.md here.
"""
