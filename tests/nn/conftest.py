"""Fixtures for the Transformer tests (THEORY section 8, claim C12)."""

import pytest
import torch

from evoflow.nn import EvoTransformer, get_config


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread (and do not fight other processes for cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_live(model: EvoTransformer, seed: int = 0, std: float = 0.2) -> EvoTransformer:
    """Perturb the time path (time MLP, per-layer shift and gate offsets) away from its initial values.

    A freshly initialised model ignores tau by design; tests of properties that must hold for
    any weights use a model in which time conditioning is live, as after some training.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("time.") or name.endswith(("time_shift", "time_gate")):
                p.add_(std * torch.randn(p.shape, generator=g))
    return model


@pytest.fixture(scope="session")
def make_model():
    """Factory (stateless, so session-scoped): ``make_model(live=True, seed=0, **overrides)`` -> tiny model."""

    def make(live: bool = True, seed: int = 0, **overrides) -> EvoTransformer:
        torch.manual_seed(seed)
        model = EvoTransformer(get_config("tiny", **overrides))
        return make_live(model, seed) if live and model.time is not None else model

    return make
