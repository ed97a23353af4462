"""The online router: the LinUCB bandit in the live runtime, learning from users' verdicts.

`OnlineRouter` wraps a `LinUcbBandit` with what the runtime needs around it: a fixed context
vector built from what is known before generating, a lock (the HTTP API plans and records
feedback from worker threads), and a state file saved atomically after every update.

The context is small and fixed, in one of two layouts (`layout`):

- `ROUTER_FEATURES`, when a learned router is configured: `[1, P(local right),
  P(cloud right)]` from the router's outcome probabilities. Each arm's expected reward is
  then linear in the context (P(local right) for the device, P(cloud right) - cost for the
  cloud), the form `benchmarks.routing` measures (`bandit.router_context` is the same
  vector). An earlier live context, `[1, P(strong wins), log prompt tokens, cues]`, scored
  0.744 / 0.717 / 0.695 at cloud costs 0.05 / 0.1 / 0.2 where this one scores
  0.765 / 0.725 / 0.695 (seed-1 random split, median of five replay orders): P(strong
  wins) ranks prompts but does not tell either arm how well it does, and the sparse cue
  features cost exploration.
- `PROMPT_FEATURES`, without a router: `[1, log prompt tokens, one flag per task cue]`,
  all the bandit knows about a prompt before generating.

Each arm learns the quality of its answers (1 good, 0 bad); the cloud's price,
`policy.bandit_cloud_cost`, is subtracted when the arms are compared, so a new price applies
at once to all that was learned, and runtimes sharing a file at different prices learn the
same thing. (The price used to be subtracted before learning: the state held it, and a
changed price changed nothing learned before.)

The names are written into the state file with the bandit's arrays, and with them what
the rewards are (`reward`: "quality"), so a file learned on another layout (after
configuring a router, or an upgrade) or with rewards net of a price (written before this
version) is refused rather than silently misread. A decision carries its layout and context
vector (`BanditVerdict.to_dict`), so feedback learns from exactly what the bandit saw,
without recomputing it.

Several runtimes (an HTTP server and a CLI, say) may share one state file. LinUCB's state is
a sum over updates, so each remembers the state it last read or wrote and, under an
exclusive lock on `<file>.lock`, adds what it learned since to whatever the file holds when
it saves; before choosing, it rereads a file another process has rewritten. No process's
feedback is lost, whatever the interleaving, and each sees the others' learning. (The lock
is POSIX `flock`; elsewhere, one process per state file.)
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.atomic import atomic_file, exclusive_lock
from runtime.cues import CUE_NAMES
from runtime.router.bandit import ARMS, Arm, BanditConfig, LinUcbBandit
from runtime.router.base import RouterFileError, RouterVerdict, read_npz
from runtime.telemetry import default_path as telemetry_path

log = logging.getLogger("tandem.router.online")

ROUTER_FEATURES: tuple[str, ...] = ("bias", "p_local_right", "p_cloud_right")
PROMPT_FEATURES: tuple[str, ...] = ("bias", "log_prompt_tokens",
                                    *(f"cue_{c}" for c in CUE_NAMES))
LAYOUTS: tuple[tuple[str, ...], ...] = (ROUTER_FEATURES, PROMPT_FEATURES)
# What the arms of a state file learned: the answers' quality, the price applied when
# choosing. Files without it (older versions) learned quality net of their price.
REWARD = "quality"
# log(1 + tokens) / log(4096): about 1 for a 4k-token prompt, so no feature dwarfs the bias.
_LOG_TOKENS_SCALE = math.log(4096.0)


def layout(with_router: bool) -> tuple[str, ...]:
    """The context layout of a runtime with or without a learned router configured."""
    return ROUTER_FEATURES if with_router else PROMPT_FEATURES


def default_path() -> Path:
    """`$XDG_STATE_HOME/tandem/bandit.npz`, next to the telemetry database."""
    return telemetry_path().with_name("bandit.npz")


def context_vector(features: tuple[str, ...], router: RouterVerdict | None,
                   prompt_tokens: int, task_cues: Sequence[str]) -> tuple[float, ...]:
    """The bandit's context for one request, in the order of `features` (a `LAYOUTS` entry).

    A probability the router does not give (or no router) is 0.5: "no idea", the same
    constant for every request, so it adds nothing the bias lacks.
    """
    if features == ROUTER_FEATURES:
        local = router.p_local_right if router is not None else None
        cloud = router.p_cloud_right if router is not None else None
        return (1.0, 0.5 if local is None else float(local),
                0.5 if cloud is None else float(cloud))
    if features == PROMPT_FEATURES:
        return (1.0, math.log1p(max(prompt_tokens, 0)) / _LOG_TOKENS_SCALE,
                *(1.0 if c in task_cues else 0.0 for c in CUE_NAMES))
    raise ValueError(f"unknown bandit context layout {list(features)}")


@dataclass(frozen=True, slots=True)
class BanditVerdict:
    """The bandit's choice for one request, with what it saw (the policy's `bandit` rule)."""

    arm: Arm
    ucb_local: float
    ucb_cloud: float
    context: tuple[float, ...]
    updates: int  # feedback learned from so far
    features: tuple[str, ...]  # the layout `context` follows

    @property
    def wants_cloud(self) -> bool:
        return self.arm == "cloud"

    def to_dict(self) -> dict[str, Any]:
        """The `bandit` entry of a decision; `context` is what feedback learns from."""
        return {"arm": self.arm, "ucb": {"local": self.ucb_local, "cloud": self.ucb_cloud},
                "features": list(self.features), "context": list(self.context),
                "updates": self.updates}


class OnlineRouter:
    """A LinUCB bandit over one context layout (`features`), persisted at `path`.

    Thread-safe, and several processes may share `path` (see the module's docstring).
    """

    def __init__(self, path: str | Path, bandit: LinUcbBandit,
                 features: tuple[str, ...] = PROMPT_FEATURES) -> None:
        if features not in LAYOUTS:
            raise ValueError(f"unknown bandit context layout {list(features)}")
        if bandit.dim != len(features):
            raise ValueError(f"the online bandit needs {len(features)} context features, "
                             f"not {bandit.dim}")
        self.path = Path(path)
        self.bandit = bandit
        self.features = features
        self._lock = threading.Lock()
        # The state as last read from or written to the file (here: none of it, so all
        # that `bandit` holds is unsaved). What the bandit learned since is what a save
        # adds to the file's state, however it learned it.
        self._base = LinUcbBandit(bandit.dim, bandit.config).statistics()
        self._seen: _Signature = None  # the file as this process last read or wrote it

    @classmethod
    def fresh(cls, path: str | Path, alpha: float = 1.0, cloud_cost: float = 0.1,
              features: tuple[str, ...] = PROMPT_FEATURES) -> OnlineRouter:
        """A bandit that has learned nothing yet (ties go local)."""
        bandit = LinUcbBandit(len(features), BanditConfig(alpha=alpha, cloud_cost=cloud_cost))
        return cls(path, bandit, features)

    @classmethod
    def load(cls, path: str | Path, alpha: float = 1.0, cloud_cost: float = 0.1,
             features: tuple[str, ...] | None = None) -> OnlineRouter:
        """Read a state file written by `save`; `RouterFileError` naming it if unusable.

        `features`: the layout the caller uses (None: whichever of `LAYOUTS` the file
        holds); a file learned on another is refused, as is one whose rewards are not the
        answers' quality (`REWARD`; older files learned them net of their price). `alpha`
        and `cloud_cost` come from the configuration, not the file: they are policy, which
        the user may change between runs, and the price applies to everything learned;
        the ridge is baked into the learned matrices and stays as it was.
        """
        path = Path(path)
        seen = _signature(path)  # before reading: a later rewrite is then reread, not missed
        arrays = read_npz(path, "bandit state file")
        if "features" not in arrays or arrays["features"].ndim != 1:
            raise RouterFileError(f"{path} is not a bandit state file: it names no context")
        found = tuple(str(f) for f in arrays["features"])
        wanted = features or (found if found in LAYOUTS else None)
        if found != wanted:
            uses = (f"this runtime uses {list(features)}" if features
                    else f"known layouts are {' and '.join(str(list(f)) for f in LAYOUTS)}")
            raise RouterFileError(f"{path} was learned on context {list(found)}, {uses}")
        reward = arrays.get("reward")
        if reward is None or reward.shape != () or str(reward) != REWARD:
            raise RouterFileError(
                f"{path} holds rewards net of the cloud price it was learned at (a file from "
                f"an earlier version), not the answers' quality: a new price cannot apply")
        dim = len(found)
        bandit = LinUcbBandit.from_arrays(arrays, path)
        if bandit.dim != dim or not np.all(np.isfinite(bandit.upper_bounds(np.ones(dim)))):
            raise RouterFileError(f"{path} holds a bandit of dimension {bandit.dim} or "
                                  f"non-finite values; expected dimension {dim}")
        bandit.config = BanditConfig(alpha=alpha, ridge=bandit.config.ridge,
                                     cloud_cost=cloud_cost)
        online = cls(path, bandit, found)
        online._base, online._seen = bandit.statistics(), seen
        return online

    @classmethod
    def open(cls, path: str | Path, alpha: float = 1.0, cloud_cost: float = 0.1,
             features: tuple[str, ...] = PROMPT_FEATURES) -> OnlineRouter:
        """The runtime's way in: load `path`, or start fresh if it is missing or unusable.

        An unusable file (corrupt, or learned on another context layout: a router was
        configured or removed since, or an upgrade changed the layout) is logged as a
        warning, renamed to `<name>.bad-<unix time>` so nothing learned is destroyed, and
        the bandit starts fresh. Refusing to start, as a bad config key does, would take
        the device's assistant down over a cache of preferences that relearns from
        feedback; silently overwriting would lose it with no trace.
        """
        path = Path(path)
        if not path.exists():
            return cls.fresh(path, alpha, cloud_cost, features)
        try:
            return cls.load(path, alpha, cloud_cost, features)
        except RouterFileError as exc:
            _set_aside(path, exc, "starting fresh")
            return cls.fresh(path, alpha, cloud_cost, features)

    @property
    def cloud_cost(self) -> float:
        return self.bandit.config.cloud_cost

    @property
    def updates(self) -> int:
        return self.bandit.updates

    def verdict(self, context: Sequence[float]) -> BanditVerdict:
        """The arm the bandit picks for this context and both arms' upper bounds."""
        x = np.asarray(context, dtype=np.float64)
        with self._lock:
            now = _signature(self.path)
            if now != self._seen:  # another process saved: learn from it
                try:
                    self._sync_locked(write=False)
                except OSError as exc:  # warned once per change; a save merges it anyway
                    self._seen = now
                    log.warning("bandit state %s not reread: %s", self.path, exc)
            ucb = self.bandit.upper_bounds(x, self.cloud_cost)
            arm = self.bandit.choose(x, self.cloud_cost)
            updates = self.bandit.updates
        return BanditVerdict(arm=arm, ucb_local=float(ucb[0]), ucb_cloud=float(ucb[1]),
                             context=tuple(float(v) for v in x), updates=updates,
                             features=self.features)

    def learn(self, decision: Mapping[str, Any] | None, source: str, good: bool) -> bool:
        """Update from a user's verdict on an answer and save; False if nothing to learn.

        `decision` is the answer's recorded decision, `source` where the answer was actually
        computed: that arm learns the answer's quality, 1 good or 0 bad (the price is
        applied when choosing). A cascade that escalated, or a cloud call that fell back to
        the device, is judged as what the user saw; crediting the arm the bandit chose
        instead was measured by `benchmarks.routing`'s `bandit_cascade` and was no better.
        Answers planned without the bandit, or on another context layout, teach it nothing.
        If saving fails (`OSError`), the update stays in memory and the next save writes it.
        """
        entry = (decision or {}).get("bandit")
        if not isinstance(entry, Mapping) or source not in ARMS:
            return False
        if tuple(entry.get("features", ())) != self.features:
            log.info("feedback not learned: the answer's bandit context has another layout")
            return False
        context = np.asarray(entry.get("context", ()), dtype=np.float64)
        if context.shape != (len(self.features),) or not np.all(np.isfinite(context)):
            return False
        arm: Arm = "cloud" if source == "cloud" else "local"
        with self._lock:
            self.bandit.update(context, arm, float(good))
            self._sync_locked(write=True)  # an OSError keeps the update unsaved, in memory
        return True

    def save(self) -> None:
        """Add this process's unsaved updates to the file's state and write it atomically
        (a temporary file, then `os.replace`), under the state file's lock."""
        with self._lock:
            self._sync_locked(write=True)

    def _sync_locked(self, *, write: bool) -> None:
        """The state becomes the file's plus what this process learned and did not save;
        with `write`, that is saved. The caller holds `self._lock`."""
        with exclusive_lock(self.path):
            seen = _signature(self.path)
            disk = self._read_file() if seen is not None else None
            if disk is not None:
                unsaved = self.bandit.statistics() - self._base
                self._base = disk.statistics()
                disk.config = self.bandit.config  # alpha and price are this runtime's policy
                disk.absorb(unsaved)
                self.bandit = disk
            if write:
                self._write_locked()
                self._base = self.bandit.statistics()
                seen = _signature(self.path)
            self._seen = seen

    def _read_file(self) -> LinUcbBandit | None:
        """The file's bandit; None (after setting the file aside) when it is unusable."""
        try:
            return OnlineRouter.load(self.path, features=self.features).bandit
        except RouterFileError as exc:
            _set_aside(self.path, exc, "keeping this process's state")
            return None

    def _write_locked(self) -> None:
        # LinUcbBandit.save owns the array layout; the context names and what the rewards
        # are go into the same file so that it describes itself.
        with atomic_file(self.path) as fh:
            self.bandit.save(fh, features=np.array(self.features), reward=np.array(REWARD))


_Signature = tuple[int, int, int] | None


def _signature(path: Path) -> _Signature:
    """What changes when the file is replaced or rewritten (None: no file)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _set_aside(path: Path, exc: RouterFileError, then: str) -> None:
    """Rename an unusable state file `<name>.bad-<unix time>`, so nothing learned is
    destroyed, and warn."""
    aside = path.with_name(f"{path.name}.bad-{int(time.time())}")
    try:
        os.replace(path, aside)
        kept = f"kept as {aside}"
    except OSError as move:
        kept = f"could not move it aside ({move})"
    log.warning("bandit state unusable, %s (%s): %s", then, kept, exc)
