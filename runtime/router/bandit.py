"""The online learner: a LinUCB contextual bandit choosing local or cloud per request.

Each arm keeps a ridge regression of its reward on the request's context (e.g. the
learned router's outcome probabilities); the bandit picks the arm with the highest upper
confidence bound, then learns from the feedback. The choice is cost-aware: each arm learns
the quality of its answers (1 good, 0 bad), and the cloud's price, `cloud_cost`, is
subtracted from the cloud arm's estimate when the arms are compared (`upper_bounds`,
`choose`, `greedy_cloud`), so the bandit only pays for the cloud where the expected gain in
quality exceeds the price, and a new price applies at once to all that was learned. (The
price used to be subtracted from the reward before learning: the learned state then held
the old price, and the ridge prior shrank the net rewards, price included, towards 0.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import numpy.typing as npt

from runtime.router.base import (
    BoolArray,
    FloatArray,
    RouterFileError,
    read_npz,
    right_probabilities,
)

Arm = Literal["local", "cloud"]
ARMS: tuple[Arm, Arm] = ("local", "cloud")


@dataclass(frozen=True, slots=True)
class BanditConfig:
    alpha: float = 1.0  # width of the confidence bound: exploration strength
    ridge: float = 1.0  # prior precision of each arm's weights
    cloud_cost: float = 0.1  # reward units one cloud call costs (quality is 0 or 1)


def cost_aware_reward(good: bool, arm: Arm, cloud_cost: float) -> float:
    """1 for a good answer, 0 for a bad one, minus `cloud_cost` if the cloud gave it: the
    value of a choice (what `simulate` and `policy_value` score), not what the arms learn."""
    return float(good) - (cloud_cost if arm == "cloud" else 0.0)


@dataclass(frozen=True, slots=True)
class Statistics:
    """A bandit's sufficient statistics, additive across updates: per arm, its precision
    matrix (ridge * I + the sum of x x^T) and reward-weighted context sum; and the count."""

    precision: FloatArray  # (arms, dim, dim)
    rewards: FloatArray  # (arms, dim)
    updates: int

    def __sub__(self, other: Statistics) -> Statistics:
        """The updates learned between `other` and this state."""
        return Statistics(self.precision - other.precision, self.rewards - other.rewards,
                          self.updates - other.updates)


class LinUcbBandit:
    """Disjoint-arm LinUCB (Li et al., 2010) over a fixed-length context vector.

    `update` learns whatever reward it is given. The comparisons take the cloud's price as
    `cloud_cost` and subtract it from the cloud arm's estimate: the live loop and `simulate`
    teach the answers' quality and pass `config.cloud_cost`; a caller whose rewards are
    already net of every cost (`benchmarks.routing`'s cascade check, where a cascade that
    escalates pays the cloud on the local arm) leaves it at 0.
    """

    def __init__(self, dim: int, config: BanditConfig | None = None) -> None:
        self.config = config or BanditConfig()
        self.dim = dim
        self._a_inv = np.stack([np.eye(dim) / self.config.ridge for _ in ARMS])
        self._b = np.zeros((len(ARMS), dim))
        self.updates = 0

    def _context(self, context: FloatArray) -> FloatArray:
        x = np.asarray(context, dtype=np.float64)
        if x.shape != (self.dim,):
            raise ValueError(f"context must have shape ({self.dim},), not {x.shape}")
        return x

    def upper_bounds(self, context: FloatArray, cloud_cost: float = 0.0) -> FloatArray:
        """Each arm's optimistic reward estimate for this context (local, cloud), the
        cloud's less `cloud_cost`, the price of a call."""
        x = self._context(context)
        theta = np.einsum("aij,aj->ai", self._a_inv, self._b)
        width = np.sqrt(np.einsum("i,aij,j->a", x, self._a_inv, x))
        out: FloatArray = theta @ x + self.config.alpha * width - np.array([0.0, cloud_cost])
        return out

    def choose(self, context: FloatArray, cloud_cost: float = 0.0) -> Arm:
        """The arm to use for this request at this cloud price (ties go local: it is free)."""
        ucb = self.upper_bounds(context, cloud_cost)
        return "cloud" if ucb[1] > ucb[0] else "local"

    def greedy_cloud(self, contexts: FloatArray, cloud_cost: float = 0.0) -> BoolArray:
        """Where the current estimates alone (no exploration bonus) pick the cloud at this
        price."""
        theta = np.einsum("aij,aj->ai", self._a_inv, self._b)
        means = np.asarray(contexts, dtype=np.float64) @ theta.T
        out: BoolArray = means[:, 1] - cloud_cost > means[:, 0]
        return out

    def update(self, context: FloatArray, arm: Arm, reward: float) -> None:
        """Learn from the reward observed after using `arm` on this context."""
        x = self._context(context)
        a = ARMS.index(arm)
        inv = self._a_inv[a]
        ix = inv @ x
        self._a_inv[a] = inv - np.outer(ix, ix) / (1.0 + x @ ix)  # Sherman-Morrison update
        self._b[a] += reward * x
        self.updates += 1

    def statistics(self) -> Statistics:
        """What this bandit has learned, as sums that add up across updates."""
        return Statistics(np.linalg.inv(self._a_inv).astype(np.float64), self._b.copy(),
                          self.updates)

    def absorb(self, delta: Statistics) -> None:
        """Add updates learned elsewhere (`delta`: the difference of two `statistics()`,
        so without the ridge): the state is then what it would be had this bandit seen
        them itself, in any order."""
        if delta.precision.shape != self._a_inv.shape or delta.rewards.shape != self._b.shape:
            raise ValueError(f"statistics of shape {delta.precision.shape} / "
                             f"{delta.rewards.shape} do not fit a bandit of dimension {self.dim}")
        self._a_inv = np.linalg.inv(np.linalg.inv(self._a_inv)
                                    + delta.precision).astype(np.float64)
        self._b = self._b + delta.rewards
        self.updates += delta.updates

    def save(self, file: str | Path | IO[bytes], **extra: npt.NDArray[Any]) -> None:
        """Persist the learned state (plain arrays, no pickle), plus any `extra` arrays."""
        c = self.config
        arrays: dict[str, Any] = {
            "a_inv": self._a_inv, "b": self._b,
            "config": np.array([c.alpha, c.ridge, c.cloud_cost]),
            "updates": np.array(self.updates), **extra,
        }
        np.savez(Path(file) if isinstance(file, str) else file, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> LinUcbBandit:
        """Read a state written by `save`."""
        return cls.from_arrays(read_npz(Path(path), "bandit state file"), path)

    @classmethod
    def from_arrays(cls, npz: Mapping[str, npt.NDArray[Any]], path: str | Path) -> LinUcbBandit:
        """The bandit a state file's arrays (`read_npz`) hold; `path` names it in errors.

        Whatever the arrays, the outcome is a usable bandit or `RouterFileError`: a config
        of three finite numbers (alpha >= 0, ridge > 0); per arm of the two, a symmetric
        positive definite `a_inv` (d, d) and a finite `b` (d,); a whole `updates` >= 0.
        (A singular `a_inv`, a wrong shape or a list of updates used to escape as NumPy's
        own errors and stop the runtime; a third arm was read as if absent.)
        """
        try:
            config = _numbers(npz["config"], "config")
            a_inv, b = _numbers(npz["a_inv"], "a_inv"), _numbers(npz["b"], "b")
            updates = npz["updates"]
            if config.shape != (3,):
                raise ValueError(f"config has shape {config.shape}, not (3,)")
            alpha, ridge, cost = (float(v) for v in config)
            if not alpha >= 0.0 or not ridge > 0.0:
                raise ValueError(f"config has alpha {alpha}, ridge {ridge}: "
                                 "needs alpha >= 0 and ridge > 0")
            if b.ndim != 2 or b.shape[0] != len(ARMS) or b.shape[1] < 1:
                raise ValueError(f"b has shape {b.shape}, not ({len(ARMS)}, dimension)")
            dim = b.shape[1]
            if a_inv.shape != (len(ARMS), dim, dim):
                raise ValueError(f"a_inv has shape {a_inv.shape}, not {(len(ARMS), dim, dim)}")
            if not np.allclose(a_inv, a_inv.transpose(0, 2, 1)):
                raise ValueError("a_inv is not symmetric")
            np.linalg.cholesky(a_inv)  # LinAlgError unless positive definite
            if updates.shape != () or updates.dtype.kind not in "iu" or int(updates) < 0:
                what = (repr(updates.item()) if updates.shape == ()
                        else f"an array of shape {updates.shape}")
                raise ValueError(f"updates is {what}, not a whole number >= 0")
            bandit = cls(dim, BanditConfig(alpha, ridge, cost))
            bandit._a_inv, bandit._b, bandit.updates = a_inv, b, int(updates)
            if not np.all(np.isfinite(bandit.statistics().precision)):
                raise ValueError("a_inv is too close to singular")
        except np.linalg.LinAlgError as exc:
            raise RouterFileError(f"{path} is not a bandit state file: a_inv is not "
                                  "positive definite") from exc
        except (KeyError, ValueError, IndexError, TypeError) as exc:
            raise RouterFileError(f"{path} is not a bandit state file: {exc}") from exc
        return bandit


def _numbers(array: npt.NDArray[Any], name: str) -> FloatArray:
    """`array` as float64, or ValueError naming it unless it holds finite real numbers."""
    if array.dtype.kind not in "iuf":
        raise ValueError(f"{name} holds {array.dtype} values, not numbers")
    out: FloatArray = array.astype(np.float64)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} holds non-finite values")
    return out


@dataclass(frozen=True, slots=True)
class Simulation:
    """The outcome of replaying labelled data as feedback.

    `learning_curve` holds (rounds of feedback seen, value of the greedy policy) pairs, the
    value being the mean cost-aware reward on a separate evaluation set: far less noisy
    than the per-round rewards, which are single 0/1 draws.
    """

    rewards: FloatArray  # per round, in replay order
    cloud: BoolArray  # per round: the bandit chose the cloud
    learning_curve: tuple[tuple[int, float], ...] = ()

    def window_means(self, windows: int) -> FloatArray:
        """Mean reward in `windows` consecutive equal slices of the replay."""
        out: FloatArray = np.array([w.mean() for w in np.array_split(self.rewards, windows)])
        return out


def policy_value(cloud: BoolArray, weak: BoolArray, strong: BoolArray, cost: float) -> float:
    """Mean cost-aware reward of routing these labelled queries as `cloud` says."""
    good = np.where(cloud, strong, weak).astype(np.float64)
    return float(np.mean(good - cost * cloud))


def simulate(
    bandit: LinUcbBandit, contexts: FloatArray, weak: BoolArray, strong: BoolArray,
    seed: int = 0, evaluation: tuple[FloatArray, BoolArray, BoolArray] | None = None,
    checkpoints: int = 10,
) -> Simulation:
    """Replay labelled queries in a seeded random order as bandit feedback.

    The reward of a choice is what the labels say that model would have scored
    (weak correctness for local, strong correctness for cloud), made cost-aware; the
    bandit learns the correctness and compares the arms at `config.cloud_cost`, as the
    live loop (`online.OnlineRouter`) does. With
    `evaluation` (contexts, weak, strong of other queries), the greedy policy is valued
    on it before any feedback and after each of `checkpoints` equal slices of the replay.
    """
    order = np.random.default_rng(seed).permutation(len(weak))
    rewards = np.empty(len(order))
    cloud = np.zeros(len(order), dtype=bool)
    cost = bandit.config.cloud_cost
    marks = {int(round(len(order) * k / checkpoints)) for k in range(1, checkpoints + 1)}
    curve: list[tuple[int, float]] = []

    def checkpoint(rounds: int) -> None:
        if evaluation is not None:
            ctx, w, s = evaluation
            curve.append((rounds, policy_value(bandit.greedy_cloud(ctx, cost), w, s, cost)))

    checkpoint(0)
    for step, i in enumerate(order):
        arm = bandit.choose(contexts[i], cost)
        good = bool(strong[i]) if arm == "cloud" else bool(weak[i])
        rewards[step] = cost_aware_reward(good, arm, cost)
        cloud[step] = arm == "cloud"
        bandit.update(contexts[i], arm, float(good))
        if step + 1 in marks:
            checkpoint(step + 1)
    return Simulation(rewards=rewards, cloud=cloud, learning_curve=tuple(curve))


def router_context(outcome_probs: FloatArray) -> FloatArray:
    """Bandit contexts from a learned router's outcome probabilities.

    [1, P(weak right), P(strong right)]: each arm's reward is then close to linear in the
    context. (The four raw outcome probabilities, collinear with the bias, made the
    bandit stall on one arm for some replay orders.)
    """
    weak, strong = right_probabilities(outcome_probs)
    out: FloatArray = np.column_stack([np.ones(weak.shape[0]), weak, strong])
    return out
