"""Every public name has a docstring that cites the part of docs/theory.md it implements."""

import importlib
import inspect
import re

import pytest

MODULES = ["evoflow", "evoflow.schedules", "evoflow.paths", "evoflow.time_samplers", "evoflow.process",
           "evoflow.field", "evoflow.oracles",
           "evoflow.kernels", "evoflow.estimators", "evoflow.solvers", "evoflow.solve", "evoflow.likelihood",
           "evoflow.elbo", "evoflow.verify", "evoflow.verify_report", "evoflow.study", "evoflow.nn",
           "evoflow.arguments", "evoflow.autoregressive", "evoflow.divergence", "evoflow.solvers.landing",
           "evoflow.verify.context", "evoflow.verify.decoding", "evoflow.decoding", "evoflow.decoding.sampler",
           "evoflow.decoding.controllers", "evoflow.decoding.generate", "evoflow.cli_sample",
           "evoflow.verify.flow", "evoflow.verify.bounds", "evoflow.verify.mixture", "evoflow.verify.estimates",
           "evoflow.train", "evoflow.train.data", "evoflow.train.corpus", "evoflow.train.tokenizer",
           "evoflow.train.checkpoint", "evoflow.train.objective",
           "evoflow.train.config", "evoflow.train.loop", "evoflow.train.evaluate", "evoflow.train.report",
           "evoflow.train.session", "evoflow.demo", "evoflow.cli_train", "evoflow.nn.hf", "evoflow.integrations",
           "evoflow.integrations.lm_eval", "evoflow.integrations.loading"]
CITATION = re.compile(r"\bC\d+\b|THEORY|proofs/p\d\d")
PUBLIC = sorted({(m, name) for m in MODULES for name in getattr(importlib.import_module(m), "__all__", [])})


@pytest.mark.parametrize(("module", "name"), PUBLIC, ids=[f"{m}.{n}" for m, n in PUBLIC])
def test_public_name_has_a_docstring_citing_theory(module, name):
    obj = getattr(importlib.import_module(module), name)
    doc = (obj.__doc__ or "") if inspect.ismodule(obj) else (inspect.getdoc(obj) or "")
    assert doc.strip(), f"{module}.{name} has no docstring"
    assert CITATION.search(doc), f"{module}.{name}: the docstring cites no THEORY claim or section"
