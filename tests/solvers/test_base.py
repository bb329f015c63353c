"""The solver contract, checked for every registered solver: frozen tokens, free idle steps,
registry lookup and entry points."""

from importlib.metadata import EntryPoint

import pytest
import torch

import evoflow as ef
import evoflow.solvers.base as base
from evoflow.field import Field
from evoflow.solvers import State

F64 = torch.float64
ALL = ef.solvers.names()


@pytest.mark.parametrize("name", ALL)
def test_tokens_whose_time_does_not_change_are_bit_for_bit_unchanged(name, markov):
    solver = ef.solvers.get(name)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 3, 2, generator=g, dtype=F64)
    z[0, 1, 0] = -0.0  # a signed zero survives only if the token is truly untouched
    t_from = torch.tensor([[0.8, 0.5, 1.0], [0.6, 0.6, 0.0]], dtype=F64)
    t_to = torch.tensor([[0.7, 0.5, 1.0], [0.6, 0.4, 0.0]], dtype=F64)
    new = solver.step(Field(markov), State(z=z), t_from, t_to, g)
    frozen = t_to == t_from
    assert torch.equal(new.z[frozen], z[frozen])
    assert torch.signbit(new.z[0, 1, 0])
    assert not torch.equal(new.z[~frozen], z[~frozen])


@pytest.mark.parametrize("name", ALL)
def test_a_step_where_nothing_moves_costs_no_call(name, markov):
    field = Field(markov)
    z = torch.randn(1, 3, 2, dtype=F64)
    t = torch.tensor([[0.0, 0.5, 1.0]], dtype=F64)
    out = ef.solvers.get(name).step(field, State(z=z), t, t.clone())
    assert field.nfe == 0 and out.z is z


@pytest.mark.parametrize("name", ALL)
def test_solvers_declare_what_the_registry_promises(name):
    s = ef.solvers.get(name)
    assert isinstance(s, ef.solvers.Solver)
    assert s.kind in ("ode", "sde") and isinstance(s.order, int) and s.order >= 1
    assert s.__doc__ or type(s).__doc__


def test_unknown_names_list_the_available_ones():
    with pytest.raises(ValueError, match=r"available: .*rk4"):
        ef.solvers.get("rk5")
    with pytest.raises(TypeError, match="solver"):
        ef.solvers.get(3)
    with pytest.raises(ValueError, match="torchdiffeq method"):
        ef.solvers.get("torchdiffeq:nonsense")
    assert ef.solvers.get("torchdiffeq:midpoint").order == 2  # any torchdiffeq method by prefix


def test_entry_point_plugins_join_the_registry(monkeypatch):
    ep = EntryPoint(name="plugin-euler", value="evoflow.solvers.explicit:Euler", group=base.ENTRY_POINT_GROUP)
    monkeypatch.setattr(base, "entry_points", lambda group: [ep] if group == base.ENTRY_POINT_GROUP else [])
    assert "plugin-euler" in ef.solvers.names()
    assert isinstance(ef.solvers.get("plugin-euler"), ef.solvers.Euler)
    bad = EntryPoint(name="bad", value="evoflow.paths:Synchronous", group=base.ENTRY_POINT_GROUP)
    monkeypatch.setattr(base, "entry_points", lambda group: [bad])
    with pytest.raises(TypeError, match="did not give a Solver"):
        ef.solvers.get("bad")


def test_tableau_validation():
    with pytest.raises(ValueError, match="sum to 1"):
        ef.solvers.ExplicitRK("bad", A=[[], [1.0]], b=[0.5, 0.6], c=[0.0, 1.0], order=2)
    with pytest.raises(ValueError, match="stages"):
        ef.solvers.ExplicitRK("bad", A=[[]], b=[0.5, 0.5], c=[0.0, 1.0], order=2)
    with pytest.raises(ValueError, match="eta"):
        ef.solvers.DDIM(eta=2.0)


def test_stochastic_steps_refuse_to_run_toward_noise(markov):
    z = torch.randn(1, 3, 2, dtype=F64)
    t0, t1 = torch.full((1, 3), 0.3, dtype=F64), torch.full((1, 3), 0.5, dtype=F64)
    with pytest.raises(ValueError, match="t_to"):
        ef.solvers.get("ddim-ancestral").step(Field(markov), State(z=z), t0, t1)
