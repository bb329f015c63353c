"""Shared test settings for tests/ and proofs/: hypothesis profiles (HYPOTHESIS_PROFILE) and threads.

The tests work on tiny tensors, where intra-op threads only add synchronisation (and stall
badly when the cores are shared), so each test process uses one thread; ``make test`` runs
two processes (pytest-xdist) instead.
"""

import os

import torch
from hypothesis import HealthCheck, settings

torch.set_num_threads(1)

settings.register_profile(
    "ci", deadline=None, max_examples=20, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", deadline=None, max_examples=500, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
