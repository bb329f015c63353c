"""Adapters to other tools' interfaces, each imported on its own (this package imports none of them).

- :mod:`evoflow.integrations.lm_eval`: lm-evaluation-harness model ``evoflow`` (exact AR-path log-likelihoods,
  C13; path bounds, C8; decoding through any controller, C14); needs the ``eval`` extra.
- :mod:`evoflow.integrations.loading`: an evoflow run directory or a Hugging Face checkpoint as a model to
  evaluate, with its tokenizer (THEORY section 8).
"""
