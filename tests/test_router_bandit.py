"""The LinUCB bandit learns from simulated feedback drawn from the labelled data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.router.bandit import (
    ARMS,
    BanditConfig,
    LinUcbBandit,
    Statistics,
    cost_aware_reward,
    policy_value,
    router_context,
    simulate,
)
from runtime.router.base import RouterFileError
from runtime.router.data import RoutingData, load_routing_data
from runtime.router.features import FeatureSpec
from runtime.router.learned import LearnedRouter, TrainParams

DATA = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "routing"


Replay = tuple[np.ndarray, RoutingData, np.ndarray, RoutingData]


@pytest.fixture(scope="module")
def replay() -> Replay:
    """A router trained on 2,000 queries; 4,000 others replayed, 3,000 more to evaluate."""
    data = load_routing_data(DATA / "mmlu.csv.gz")
    data = data.subset(np.random.default_rng(3).permutation(len(data)))
    train, held, ev = (data.subset(range(2000)), data.subset(range(2000, 6000)),
                       data.subset(range(6000, 9000)))
    params = TrainParams(features=FeatureSpec(word_bits=15, char_bits=15, stem_bits=15))
    router = LearnedRouter.train(train.prompts, train.weak, train.strong, params)
    return (router_context(router.outcome_probabilities(held.prompts)), held,
            router_context(router.outcome_probabilities(ev.prompts)), ev)


def test_reward_is_quality_minus_the_cloud_price() -> None:
    assert cost_aware_reward(True, "local", 0.3) == 1.0
    assert cost_aware_reward(True, "cloud", 0.3) == pytest.approx(0.7)
    assert cost_aware_reward(False, "cloud", 0.3) == pytest.approx(-0.3)


def test_bandit_reward_rises_on_simulated_feedback(replay: Replay) -> None:
    contexts, held, eval_contexts, ev = replay
    cost = 0.1
    sim = simulate(LinUcbBandit(contexts.shape[1], BanditConfig(cloud_cost=cost)),
                   contexts, held.weak, held.strong, seed=0,
                   evaluation=(eval_contexts, ev.weak, ev.strong))
    (start, before), *_, (end, after) = sim.learning_curve
    assert (start, end) == (0, len(held))
    # Untrained it keeps everything local (ties go local); feedback teaches it the cloud's
    # worth per query: the reward of its policy on unseen queries rises by >= 2 points
    # and ends above both fixed policies (always local, always cloud).
    assert before == pytest.approx(ev.weak.mean())
    assert after >= before + 0.02
    assert after > max(ev.weak.mean(), ev.strong.mean() - cost)


def test_simulation_teaches_quality_and_values_choices_at_the_price(replay: Replay) -> None:
    """The arms learn whether the answer was good; the price is charged when choosing and
    valuing (the learned sums once held quality minus the price)."""
    contexts, held, eval_contexts, ev = replay
    n, cost = 400, 0.2
    bandit = LinUcbBandit(contexts.shape[1], BanditConfig(cloud_cost=cost))
    sim = simulate(bandit, contexts[:n], held.weak[:n], held.strong[:n], seed=2,
                   evaluation=(eval_contexts, ev.weak, ev.strong), checkpoints=2)
    order = np.random.default_rng(2).permutation(n)
    good = np.where(sim.cloud, held.strong[order], held.weak[order]).astype(np.float64)
    assert 0 < sim.cloud.sum() < n  # both arms learned something
    assert np.array_equal(sim.rewards, good - cost * sim.cloud)  # valued as before
    learned = np.stack([(good[arm] * contexts[order][arm].T).sum(axis=1)
                        for arm in (~sim.cloud, sim.cloud)])
    assert np.allclose(bandit.statistics().rewards, learned)
    assert sim.learning_curve[-1] == (n, policy_value(
        bandit.greedy_cloud(eval_contexts, cost), ev.weak, ev.strong, cost))


def test_the_price_is_subtracted_when_comparing_the_arms() -> None:
    """Taught the answers' quality, one learned state serves any price: the cloud arm's
    bound drops by exactly the price, and the choice follows."""
    bandit = LinUcbBandit(1, BanditConfig(alpha=0.0))
    x = np.ones(1)
    for k in range(100):  # the cloud is right 80 % of the time, the device 60 %
        bandit.update(x, "cloud", float(k % 5 != 0))
        bandit.update(x, "local", float(k % 5 < 3))
    free = bandit.upper_bounds(x)
    assert free == pytest.approx([60 / 101, 80 / 101])  # ridge 1: sums over 1 + count
    for price, arm in ((0.1, "cloud"), (0.3, "local")):
        assert bandit.upper_bounds(x, price) == pytest.approx(free - [0.0, price])
        assert bandit.choose(x, price) == arm
        assert bandit.greedy_cloud(np.ones((2, 1)), price).tolist() == [arm == "cloud"] * 2
    assert bandit.choose(x) == "cloud"  # no price: the rewards are taken as they are


def test_simulation_is_deterministic_for_a_seed(replay: Replay) -> None:
    contexts, held, _, _ = replay
    runs = [simulate(LinUcbBandit(contexts.shape[1]), contexts[:500], held.weak[:500],
                     held.strong[:500], seed=5) for _ in range(2)]
    assert np.array_equal(runs[0].rewards, runs[1].rewards)


def test_bandit_state_round_trips(replay: Replay, tmp_path: Path) -> None:
    contexts, held, _, _ = replay
    bandit = LinUcbBandit(contexts.shape[1], BanditConfig(alpha=0.2, cloud_cost=0.2))
    simulate(bandit, contexts[:300], held.weak[:300], held.strong[:300])
    bandit.save(tmp_path / "bandit.npz")
    loaded = LinUcbBandit.load(tmp_path / "bandit.npz")
    assert loaded.config == bandit.config and loaded.updates == 300
    assert np.allclose(loaded.upper_bounds(contexts[400]), bandit.upper_bounds(contexts[400]))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(RouterFileError):
        LinUcbBandit.load(tmp_path / "junk.npz")


def _state(**arrays: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays of a 3-dimensional bandit's state file, with `arrays` replacing some."""
    bandit = LinUcbBandit(3)
    bandit.update(np.array([1.0, 0.5, 0.2]), "cloud", 1.0)
    return {"a_inv": bandit._a_inv, "b": bandit._b, "config": np.array([1.0, 1.0, 0.1]),
            "updates": np.array(1), **arrays}


@pytest.mark.parametrize(("arrays", "says"), [
    ({"a_inv": np.zeros((2, 3, 3))}, "a_inv is not positive definite"),
    ({"a_inv": np.stack([-np.eye(3)] * 2)}, "a_inv is not positive definite"),
    ({"a_inv": np.stack([np.triu(np.ones((3, 3)))] * 2)}, "a_inv is not symmetric"),
    ({"a_inv": np.zeros((2, 2, 2))}, r"a_inv has shape \(2, 2, 2\), not \(2, 3, 3\)"),
    ({"a_inv": np.stack([np.eye(3)] * 3), "b": np.zeros((3, 3))},
     r"b has shape \(3, 3\), not \(2, dimension\)"),
    ({"b": np.zeros(3)}, r"b has shape \(3,\)"),
    ({"b": np.full((2, 3), np.nan)}, "b holds non-finite values"),
    ({"b": np.array([["x"] * 3] * 2)}, "b holds <U1 values, not numbers"),
    ({"updates": np.array([1, 2])}, r"updates is an array of shape \(2,\)"),
    ({"updates": np.array(-1)}, "updates is -1, not a whole number"),
    ({"updates": np.array(1.5)}, "updates is 1.5, not a whole number"),
    ({"config": np.array([1.0, 0.0, 0.1])}, "config has alpha 1.0, ridge 0.0: needs alpha >= 0"),
    ({"config": np.array(1.0)}, r"config has shape \(\), not \(3,\)"),
], ids=["singular", "negative definite", "asymmetric", "a_inv shape", "three arms", "b 1-D",
        "nan", "strings", "updates list", "negative updates", "fractional updates", "ridge 0",
        "config scalar"])
def test_a_malformed_state_is_refused_naming_what_is_wrong(
    tmp_path: Path, arrays: dict[str, np.ndarray], says: str
) -> None:
    """Each used to escape as NumPy's own error (LinAlgError, ValueError, TypeError) or,
    with three arms, load as if the third were not there."""
    path = tmp_path / "bandit.npz"
    np.savez(path, **_state(**arrays))
    with pytest.raises(RouterFileError, match=f"{path} is not a bandit state file: {says}"):
        LinUcbBandit.load(path)
    np.savez(path, **_state())
    assert LinUcbBandit.load(path).updates == 1  # the file unchanged loads


def test_context_of_the_wrong_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="shape \\(5,\\)"):
        LinUcbBandit(5).choose(np.ones(3))


def test_absorbed_statistics_equal_learning_the_updates_directly() -> None:
    rng = np.random.default_rng(6)
    updates = [(rng.random(3), ARMS[int(rng.integers(2))], float(rng.random()))
               for _ in range(50)]
    direct, part = LinUcbBandit(3), LinUcbBandit(3)
    for x, arm, reward in updates:
        direct.update(x, arm, reward)
    for x, arm, reward in updates[:20]:
        part.update(x, arm, reward)
    precision, rewards = np.zeros((2, 3, 3)), np.zeros((2, 3))  # the other 30, as sums
    for x, arm, reward in updates[20:]:
        precision[ARMS.index(arm)] += np.outer(x, x)
        rewards[ARMS.index(arm)] += reward * x
    part.absorb(Statistics(precision, rewards, 30))
    assert part.updates == direct.updates == 50
    got, want = part.statistics(), direct.statistics()
    for mine, theirs in ((got.precision, want.precision), (got.rewards, want.rewards)):
        assert np.allclose(mine, theirs)
    assert np.allclose(part.upper_bounds(updates[0][0]), direct.upper_bounds(updates[0][0]))
    with pytest.raises(ValueError, match="dimension 3"):
        part.absorb(Statistics(np.zeros((2, 4, 4)), np.zeros((2, 4)), 1))
