"""The online bandit in the live runtime: context, persistence, and learning from feedback."""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest

from benchmarks.routing import BanditHalves, bandit_cascade
from kernels import Engine
from runtime.config import load_config
from runtime.errors import ConfigError
from runtime.facade import Runtime
from runtime.router.bandit import (
    Arm,
    BanditConfig,
    LinUcbBandit,
    router_context,
)
from runtime.router.base import RouterFileError, RouterVerdict, read_npz
from runtime.router.data import load_routing_data
from runtime.router.features import FeatureSpec
from runtime.router.learned import LearnedRouter, TrainParams
from runtime.router.online import (
    PROMPT_FEATURES,
    ROUTER_FEATURES,
    OnlineRouter,
    context_vector,
    default_path,
    layout,
)
from runtime.router.store import save_router
from tests.conftest_gateway import RunningGateway
from tests.device_server import serve_in_thread

Q = [{"role": "user", "content": "Name a fruit."}]
DATA = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "routing"


@pytest.fixture(scope="module")
def router() -> LearnedRouter:
    """A small n-gram router on 800 MMLU queries of the bundled routing labels."""
    data = load_routing_data(DATA / "mmlu.csv.gz")
    part = data.subset(np.random.default_rng(3).permutation(len(data))[:800])
    return LearnedRouter.train(part.prompts, part.weak, part.strong,
                               TrainParams(features=FeatureSpec(word_bits=14, char_bits=14,
                                                                stem_bits=14)))


def _runtime(engine: Engine, gateway: RunningGateway, folder: Path, *, mode: str = "prefer-local",
             bandit: bool = True, router: Path | None = None) -> Runtime:
    """A runtime with the bandit on, configured the way a user would (environment keys)."""
    env = {
        "TANDEM_RUNTIME_MODE": mode,
        "TANDEM_RUNTIME_TELEMETRY_PATH": str(folder / "telemetry.sqlite3"),
        "TANDEM_OFFLOAD_URL": gateway.url,
        "TANDEM_OFFLOAD_CREDENTIAL": gateway.home.credential,
        "TANDEM_POLICY_BANDIT": "true" if bandit else "false",
        "TANDEM_POLICY_BANDIT_PATH": str(folder / "bandit.npz"),
    }
    if router is not None:
        env["TANDEM_POLICY_ROUTER_PATH"] = str(router)
    return Runtime(load_config(env=env), engine=engine)


def _cloud_is_better(path: Path) -> OnlineRouter:
    """A saved bandit that has seen short prompts answered well by the cloud only."""
    online = OnlineRouter.fresh(path)
    for tokens in range(10, 80, 5):
        x = np.array(context_vector(PROMPT_FEATURES, None, tokens, ()))
        online.bandit.update(x, "cloud", 0.9)
        online.bandit.update(x, "local", 0.0)
    online.save()
    return online


def _write_state(path: Path, **change: np.ndarray | None) -> None:
    """Replace `path`, as another process would, by a state file as `OnlineRouter` saves
    it (prompt layout, one update learned), with `change` replacing some of its arrays
    (None: leaving one out)."""
    made = path.with_name("made.npz")
    source = OnlineRouter.fresh(made)
    source.bandit.update(np.array(context_vector(PROMPT_FEATURES, None, 30, ())), "cloud", 1.0)
    source.save()
    arrays = {**read_npz(made, "bandit state file"), **change}
    np.savez(made, **{k: v for k, v in arrays.items() if v is not None})
    made.replace(path)


_N = len(PROMPT_FEATURES)
# Valid .npz archives whose arrays no bandit could have written, and one from before
# the price was applied when choosing.
BAD_STATES: dict[str, dict[str, np.ndarray | None]] = {
    "singular a_inv": {"a_inv": np.zeros((2, _N, _N))},
    "a_inv of another shape": {"a_inv": np.zeros((2, 2, 2))},
    "updates not one number": {"updates": np.array([1, 2])},
    "three arms": {"a_inv": np.stack([np.eye(_N)] * 3), "b": np.zeros((3, _N))},
    "infinite b": {"b": np.full((2, _N), np.inf)},
    "features not a list": {"features": np.array("bias")},
    "rewards net of a price": {"reward": None},
}


def test_context_vector_follows_each_layout() -> None:
    verdict = RouterVerdict("lr", score=0.2, threshold=0.1, p_strong_wins=0.35,
                            p_local_right=0.4, p_cloud_right=0.75)
    x = context_vector(PROMPT_FEATURES, verdict, 4095, ("math", "unknown-cue"))
    assert dict(zip(PROMPT_FEATURES, x, strict=True)) == pytest.approx({
        "bias": 1.0, "log_prompt_tokens": 1.0,
        "cue_code": 0.0, "cue_math": 1.0, "cue_translation": 0.0})
    assert context_vector(PROMPT_FEATURES, None, 0, ()) == (1.0, 0.0, 0.0, 0.0, 0.0)
    assert context_vector(ROUTER_FEATURES, verdict, 4095, ("math",)) == (1.0, 0.4, 0.75)
    # No router, or one without the probabilities: "no idea" for both.
    assert context_vector(ROUTER_FEATURES, None, 10, ()) == (1.0, 0.5, 0.5)
    bare = RouterVerdict("x", score=0.0, threshold=0.0)
    assert context_vector(ROUTER_FEATURES, bare, 10, ()) == (1.0, 0.5, 0.5)
    assert (layout(True), layout(False)) == (ROUTER_FEATURES, PROMPT_FEATURES)
    with pytest.raises(ValueError, match="unknown bandit context layout"):
        context_vector(("bias",), None, 1, ())


def test_router_layout_is_the_context_the_routing_benchmark_measures(
    router: LearnedRouter,
) -> None:
    """`benchmarks.routing` values the bandit on `router_context` of outcome probabilities;
    the live runtime builds its context from the router's verdict: the same numbers."""
    prompts = ["What is 7 * 8?", "Which organelle makes ATP?\nA. nucleus\nB. mitochondria",
               "Translate 'thank you' into French."]
    live = [context_vector(ROUTER_FEATURES, router.verdict(q), 0, ()) for q in prompts]
    assert np.allclose(live, router_context(router.outcome_probabilities(prompts)))
    assert all(0.0 < x[1] < 1.0 and 0.0 < x[2] < 1.0 for x in live)


def test_default_path_is_next_to_the_telemetry(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_path() == tmp_path / "tandem" / "bandit.npz"


def test_saved_state_loads_with_identical_bounds_and_config_from_the_caller(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state" / "bandit.npz"
    saved = _cloud_is_better(path)
    x = context_vector(PROMPT_FEATURES, None, 30, ())
    loaded = OnlineRouter.load(path, alpha=1.0, cloud_cost=0.1)
    assert loaded.updates == saved.updates == 28
    assert loaded.verdict(x) == saved.verdict(x)
    assert loaded.verdict(x).arm == "cloud"
    greedy = OnlineRouter.load(path, alpha=0.0, cloud_cost=0.3)
    assert greedy.bandit.config.alpha == 0.0 and greedy.cloud_cost == 0.3
    # No temporary left; the lock file that serialises savers stays (it holds nothing).
    assert sorted(p.name for p in path.parent.iterdir()) == ["bandit.npz", "bandit.npz.lock"]


@pytest.mark.parametrize("content", [b"not an npz file", b"PK\x03\x04truncated"],
                         ids=["garbage", "truncated zip"])
def test_corrupt_state_file_is_refused_naming_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bandit.npz"
    path.write_bytes(content)
    with pytest.raises(RouterFileError, match=f"{path} is not a bandit state file"):
        OnlineRouter.load(path)


def test_state_learned_on_another_context_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bandit.npz"
    np.savez(path, a_inv=np.stack([np.eye(3)] * 2), b=np.zeros((2, 3)),
             config=np.array([1.0, 1.0, 0.1]), updates=np.array(5),
             features=np.array(["bias", "p_weak", "p_strong"]))
    with pytest.raises(RouterFileError, match="was learned on context .* known layouts are"):
        OnlineRouter.load(path)
    routed = tmp_path / "routed.npz"
    OnlineRouter.fresh(routed, features=ROUTER_FEATURES).save()
    assert OnlineRouter.load(routed).features == ROUTER_FEATURES  # any known layout
    assert OnlineRouter.load(routed, features=ROUTER_FEATURES).features == ROUTER_FEATURES
    with pytest.raises(RouterFileError, match="this runtime uses .*log_prompt_tokens"):
        OnlineRouter.load(routed, features=PROMPT_FEATURES)


def test_open_sets_an_unusable_file_aside_and_starts_fresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "bandit.npz"
    path.write_bytes(b"not an npz file")
    with caplog.at_level(logging.WARNING, logger="tandem.router.online"):
        online = OnlineRouter.open(path)
    assert online.updates == 0
    (aside,) = tmp_path.glob("bandit.npz.bad-*")
    assert aside.read_bytes() == b"not an npz file"
    assert not path.exists()
    (record,) = caplog.records
    assert "starting fresh" in record.getMessage() and str(path) in record.getMessage()


def test_learn_uses_the_recorded_context_and_ignores_answers_without_one(
    tmp_path: Path,
) -> None:
    online = OnlineRouter.fresh(tmp_path / "bandit.npz", cloud_cost=0.25)
    x = context_vector(PROMPT_FEATURES, None, 40, ("code",))
    decision = {"bandit": online.verdict(x).to_dict()}
    other = OnlineRouter.fresh(tmp_path / "other.npz", features=ROUTER_FEATURES)
    assert not online.learn({"bandit": other.verdict((1.0, 0.5, 0.5)).to_dict()}, "local", True)
    assert not online.learn(None, "local", True)
    assert not online.learn({"bandit": None}, "local", True)
    assert not online.learn(decision, "elsewhere", True)
    assert not (tmp_path / "bandit.npz").exists()
    assert online.learn(decision, "cloud", True)
    # One cloud answer judged good: quality 1 on the cloud arm, saved at once; the price
    # is the loader's (here the default 0.1), applied when choosing.
    mirror = OnlineRouter.fresh(tmp_path / "mirror.npz")
    mirror.bandit.update(np.array(x), "cloud", 1.0)
    assert OnlineRouter.load(tmp_path / "bandit.npz").verdict(x) == mirror.verdict(x)
    assert online.verdict(x).ucb_cloud == pytest.approx(mirror.verdict(x).ucb_cloud - 0.15)


Feedback = list[tuple[tuple[float, ...], Arm, bool]]


def _feedback(n: int, seed: int) -> Feedback:
    """n (context, source, verdict) triples on the prompt layout, seeded."""
    rng = np.random.default_rng(seed)
    return [(context_vector(PROMPT_FEATURES, None, int(rng.integers(5, 3000)),
                            ("code",) if rng.random() < 0.3 else ()),
             "cloud" if rng.random() < 0.4 else "local", bool(rng.random() < 0.7))
            for _ in range(n)]


def _everything(feedback: Feedback, cloud_cost: float = 0.1) -> LinUcbBandit:
    """One bandit that saw all of `feedback` itself: the reference a shared file must equal
    (its arms learn the answers' quality, whatever the price)."""
    bandit = LinUcbBandit(len(PROMPT_FEATURES), BanditConfig(cloud_cost=cloud_cost))
    for x, source, good in feedback:
        bandit.update(np.array(x), source, float(good))
    return bandit


def _answer_and_judge(online: OnlineRouter, x: tuple[float, ...], source: Arm, good: bool
                      ) -> bool:
    """What a runtime does for one answer: the bandit's verdict is recorded with the
    decision, then the user's verdict on the answer teaches it."""
    return online.learn({"bandit": online.verdict(x).to_dict()}, source, good)


def _same_state(a: LinUcbBandit, b: LinUcbBandit) -> bool:
    sa, sb = a.statistics(), b.statistics()
    return (sa.updates == sb.updates and np.allclose(sa.precision, sb.precision)
            and np.allclose(sa.rewards, sb.rewards))


def test_a_new_price_applies_to_everything_learned(tmp_path: Path) -> None:
    """`policy.bandit_cloud_cost` is policy: each runtime compares what the arms learned,
    the answers' quality, at its own price, whoever learned it at whatever price. (The
    price was subtracted before learning: restarted at 1.0, a bandit taught at 0.1 chose
    exactly as before, and runtimes sharing a file at two prices mixed their rewards.)"""
    path = tmp_path / "bandit.npz"
    x = (1.0, 0.6, 0.8)
    cheap = OnlineRouter.open(path, cloud_cost=0.1, features=ROUTER_FEATURES)
    dear = OnlineRouter.open(path, cloud_cost=1.0, features=ROUTER_FEATURES)
    for k in range(100):  # the cloud is right 80 % of the time, the device 60 %
        online = cheap if k % 2 else dear
        assert _answer_and_judge(online, x, "cloud", k % 5 != 0)
        assert _answer_and_judge(online, x, "local", k % 5 < 3)
    learned = OnlineRouter.load(path).bandit.statistics()
    assert learned.updates == 200
    assert np.allclose(learned.rewards, [np.multiply(60, x), np.multiply(80, x)])
    mine, theirs = cheap.verdict(x), dear.verdict(x)
    assert (mine.arm, theirs.arm, mine.updates, theirs.updates) == ("cloud", "local", 200, 200)
    assert theirs.ucb_local == pytest.approx(mine.ucb_local)
    assert theirs.ucb_cloud == pytest.approx(mine.ucb_cloud - 0.9)
    for price, arm in ((0.1, "cloud"), (1.0, "local")):  # a restart at either price
        again = OnlineRouter.open(path, cloud_cost=price, features=ROUTER_FEATURES).verdict(x)
        assert again.arm == arm
        assert (again.ucb_local, again.ucb_cloud) == pytest.approx(
            (mine.ucb_local, mine.ucb_cloud + 0.1 - price))


def test_a_state_file_learned_net_of_a_price_is_refused(tmp_path: Path) -> None:
    """An earlier version's file holds quality less a price it does not record: read as
    quality it would favour the cloud by that price, so it is refused (and `open` sets it
    aside, as a file of another layout)."""
    path = tmp_path / "bandit.npz"
    _write_state(path)
    assert OnlineRouter.load(path).updates == 1
    _write_state(path, reward=None)
    with pytest.raises(RouterFileError, match=f"{path} holds rewards net of the cloud price"):
        OnlineRouter.load(path)
    _write_state(path, reward=np.array("quality minus 0.1"))
    with pytest.raises(RouterFileError, match="holds rewards net of the cloud price"):
        OnlineRouter.load(path)


@pytest.mark.parametrize("change", BAD_STATES.values(), ids=BAD_STATES)
def test_open_sets_a_malformed_state_file_aside_and_starts_fresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, change: dict[str, np.ndarray | None]
) -> None:
    """A valid archive with arrays no bandit wrote is unusable like a corrupt one. (A
    singular a_inv, a wrong shape or a list of updates escaped as NumPy's errors and
    stopped the runtime; three arms loaded silently.)"""
    path = tmp_path / "bandit.npz"
    _write_state(path, **change)
    with pytest.raises(RouterFileError, match=str(path)):
        OnlineRouter.load(path)
    with caplog.at_level(logging.WARNING, logger="tandem.router.online"):
        online = OnlineRouter.open(path)
    assert online.updates == 0 and not path.exists()
    assert len(list(tmp_path.glob("bandit.npz.bad-*"))) == 1
    (record,) = caplog.records
    assert "starting fresh" in record.getMessage() and str(path) in record.getMessage()
    verdict = online.verdict(context_vector(PROMPT_FEATURES, None, 30, ()))
    assert (verdict.arm, verdict.updates) == ("local", 0)


@pytest.mark.parametrize("change", BAD_STATES.values(), ids=BAD_STATES)
def test_a_malformed_state_file_written_meanwhile_is_set_aside_on_reread(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, change: dict[str, np.ndarray | None]
) -> None:
    """Choosing rereads a file another process rewrote; an unusable one is set aside and
    this process keeps what it learned (the errors used to escape from `verdict`)."""
    path = tmp_path / "bandit.npz"
    online = OnlineRouter.open(path)
    feedback = _feedback(3, seed=7)
    for x, source, good in feedback[:2]:
        assert _answer_and_judge(online, x, source, good)
    _write_state(path, **change)
    x, source, good = feedback[2]
    with caplog.at_level(logging.WARNING, logger="tandem.router.online"):
        verdict = online.verdict(x)
    assert verdict.updates == 2 and not path.exists()
    assert len(list(tmp_path.glob("bandit.npz.bad-*"))) == 1
    (record,) = caplog.records
    assert "keeping this process's state" in record.getMessage()
    assert online.learn({"bandit": verdict.to_dict()}, source, good)
    assert _same_state(OnlineRouter.load(path).bandit, _everything(feedback))


def test_two_routers_sharing_a_state_file_lose_no_update_and_see_each_other(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bandit.npz"
    first, second = OnlineRouter.open(path), OnlineRouter.open(path)
    feedback = _feedback(9, seed=4)
    for i, (x, source, good) in enumerate(feedback):  # interleaved: 5 here, 4 there
        online = first if i % 2 == 0 else second
        assert _answer_and_judge(online, x, source, good)
    reference = _everything(feedback)
    assert _same_state(OnlineRouter.load(path).bandit, reference)
    # `first` saved the last update; `second` has not seen it until choosing rereads the file.
    assert (first.updates, second.updates) == (9, 8)
    x = feedback[0][0]
    mine, theirs = first.verdict(x), second.verdict(x)
    assert (mine.arm, mine.updates) == (theirs.arm, theirs.updates) == (mine.arm, 9)
    assert (mine.ucb_local, mine.ucb_cloud) == pytest.approx((theirs.ucb_local,
                                                              theirs.ucb_cloud))
    # A router built around a bandit that learned elsewhere adds all of it to the file.
    more = _feedback(4, seed=9)
    OnlineRouter(path, _everything(more)).save()
    assert _same_state(OnlineRouter.load(path).bandit, _everything(feedback + more))
    assert _same_state(first.bandit, reference)


def test_processes_sharing_a_state_file_lose_no_update(tmp_path: Path) -> None:
    path = tmp_path / "bandit.npz"
    worker = (
        "import sys\n"
        "from runtime.router.online import OnlineRouter\n"
        "from tests.test_router_online import _answer_and_judge, _feedback\n"
        "online = OnlineRouter.open(sys.argv[1])\n"
        "for x, source, good in _feedback(60, seed=int(sys.argv[2])):\n"
        "    assert _answer_and_judge(online, x, source, good)\n"
    )
    root = Path(__file__).resolve().parent.parent
    procs = [subprocess.Popen([sys.executable, "-c", worker, str(path), str(seed)], cwd=root)
             for seed in (11, 12)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    # Last save wins would leave one process's 60 updates; the sums keep all 120.
    assert _same_state(OnlineRouter.load(path).bandit,
                       _everything(_feedback(60, seed=11) + _feedback(60, seed=12)))


def test_a_state_file_that_cannot_be_locked_loses_nothing_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "bandit.npz"
    online = OnlineRouter.open(path)
    feedback = _feedback(4, seed=6)
    (tmp_path / "bandit.npz.lock").mkdir()  # the lock cannot be opened: every sync fails
    x, source, good = feedback[0]
    with pytest.raises(OSError):
        _answer_and_judge(online, x, source, good)
    assert online.updates == 1 and not path.exists()  # learned, kept pending
    other = OnlineRouter(tmp_path / "other.npz", _everything(feedback[1:]))
    other.save()
    (tmp_path / "other.npz").replace(path)  # another process's state appears
    with caplog.at_level(logging.WARNING, logger="tandem.router.online"):
        online.verdict(x)
        online.verdict(x)  # the same file: not retried, not warned again
    assert [r.getMessage().startswith(f"bandit state {path} not reread") for r in caplog.records
            ] == [True]
    (tmp_path / "bandit.npz.lock").rmdir()
    online.save()
    assert _same_state(OnlineRouter.load(path).bandit, _everything(feedback))


def test_a_save_sets_another_layouts_file_aside_and_keeps_its_own_updates(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "bandit.npz"
    online = OnlineRouter.open(path)
    feedback = _feedback(3, seed=5)
    for x, source, good in feedback[:2]:
        _answer_and_judge(online, x, source, good)
    OnlineRouter.fresh(path, features=ROUTER_FEATURES).save()  # a runtime with a router
    x, source, good = feedback[2]
    with caplog.at_level(logging.WARNING, logger="tandem.router.online"):
        # Choosing rereads the file, unusable here, and sets it aside; learning saves.
        assert _answer_and_judge(online, x, source, good)
    assert _same_state(OnlineRouter.load(path, features=PROMPT_FEATURES).bandit,
                       _everything(feedback))
    (aside,) = tmp_path.glob("bandit.npz.bad-*")
    assert OnlineRouter.load(aside).features == ROUTER_FEATURES
    assert "keeping this process's state" in caplog.records[0].getMessage()


def test_bandit_config_keys_come_from_the_environment() -> None:
    cfg = load_config(env={"TANDEM_POLICY_BANDIT": "yes", "TANDEM_POLICY_BANDIT_ALPHA": "0.5",
                           "TANDEM_POLICY_BANDIT_CLOUD_COST": "0.2",
                           "TANDEM_POLICY_BANDIT_PATH": "/tmp/b.npz"})
    p = cfg.policy
    assert (p.bandit, p.bandit_alpha, p.bandit_cloud_cost, p.bandit_path) == (
        True, 0.5, 0.2, "/tmp/b.npz")
    assert load_config(env={}).policy.bandit is False
    with pytest.raises(ConfigError, match=r"policy.bandit_cloud_cost must be in \[0, 1\]"):
        load_config(env={"TANDEM_POLICY_BANDIT_CLOUD_COST": "2"})


def test_feedback_updates_the_bandit_once_and_survives_a_restart(
    engine: Engine, gateway: RunningGateway, tmp_path: Path
) -> None:
    rt = _runtime(engine, gateway, tmp_path)
    with serve_in_thread(rt) as url:
        resp = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
            "model": "tandem", "messages": Q, "max_tokens": 4})
        body = resp.json()
        answer_id, source = body["id"], body["tandem"]["source"]
        bandit = body["tandem"]["decision"]["bandit"]
        # A fresh bandit ties, and ties go local: the device answers first (cascade).
        assert bandit["arm"] == "local" and bandit["updates"] == 0
        # No router configured: the prompt layout.
        assert bandit["features"] == list(PROMPT_FEATURES)
        assert len(bandit["context"]) == len(PROMPT_FEATURES)
        before = OnlineRouter.fresh(tmp_path / "unused.npz").verdict(bandit["context"])
        for good in (False, True):  # a changed mind is recorded, but taught only once
            ok = httpx.post(f"{url}/v1/feedback", json={"id": answer_id, "good": good})
            assert ok.status_code == 200
    assert rt.telemetry is not None
    row = rt.telemetry.answer(answer_id)
    rt.close()
    assert row is not None and row["feedback"] == 1
    learned = OnlineRouter.load(tmp_path / "bandit.npz")
    assert learned.updates == 1
    after = learned.verdict(bandit["context"])
    # The bad verdict lowered the bound of the arm that answered, and only that one.
    taken, other = ("ucb_cloud", "ucb_local") if source == "cloud" else ("ucb_local",
                                                                           "ucb_cloud")
    assert getattr(after, taken) < getattr(before, taken)
    assert getattr(after, other) == getattr(before, other)
    with _runtime(engine, gateway, tmp_path) as restarted:
        again = restarted.generate(Q, params=restarted.params(max_tokens=4))
    assert again.decision is not None and again.decision["bandit"]["updates"] == 1


def test_a_learned_state_sends_prefer_local_to_the_cloud_and_says_why(
    engine: Engine, gateway: RunningGateway, tmp_path: Path
) -> None:
    _cloud_is_better(tmp_path / "bandit.npz")
    with _runtime(engine, gateway, tmp_path) as rt:
        result = rt.generate(Q, params=rt.params(max_tokens=4))
    assert result.source == "cloud"
    assert result.reason.startswith("mode prefer-local: bandit picks the cloud (upper bounds")
    assert result.decision is not None and result.decision["fired"] == ["bandit"]
    (row,) = [e for e in result.decision["trace"] if e["rule"] == "bandit"]
    assert row["fired"] is True and row["value"] > row["threshold"]
    assert result.decision["bandit"]["ucb"] == {"cloud": row["value"],
                                                "local": row["threshold"]}


def test_feedback_on_an_answer_without_bandit_context_records_only(
    engine: Engine, gateway: RunningGateway, tmp_path: Path
) -> None:
    with _runtime(engine, gateway, tmp_path) as rt:
        result = rt.generate(Q, mode="local-only", params=rt.params(max_tokens=2))
        rt.feedback(result.id, False, "too short")
        assert rt.telemetry is not None
        row = rt.telemetry.answer(result.id)
    assert result.decision is None
    assert row is not None and (row["feedback"], row["feedback_note"]) == (0, "too short")
    assert not (tmp_path / "bandit.npz").exists()  # nothing learned, nothing saved


def test_bandit_off_leaves_decisions_and_state_alone(
    engine: Engine, gateway: RunningGateway, tmp_path: Path
) -> None:
    with _runtime(engine, gateway, tmp_path, bandit=False) as rt:
        result = rt.generate(Q, params=rt.params(max_tokens=2))
        rt.feedback(result.id, True)
    assert result.decision is not None and result.decision["bandit"] is None
    (row,) = [e for e in result.decision["trace"] if e["rule"] == "bandit"]
    assert row == {"rule": "bandit", "fired": False, "detail": "bandit off", "value": None,
                   "threshold": None}
    assert not (tmp_path / "bandit.npz").exists()


@pytest.mark.parametrize("archive", [False, True], ids=["zeros", "singular a_inv"])
def test_runtime_with_a_corrupt_state_file_warns_and_starts_fresh(
    engine: Engine, gateway: RunningGateway, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    archive: bool,
) -> None:
    # A valid archive with a singular matrix used to stop `Runtime()` (LinAlgError).
    if archive:
        _write_state(tmp_path / "bandit.npz", **BAD_STATES["singular a_inv"])
    else:
        (tmp_path / "bandit.npz").write_bytes(b"\x00" * 64)
    with caplog.at_level(logging.WARNING, logger="tandem.router.online"), \
            _runtime(engine, gateway, tmp_path) as rt:
        result = rt.generate(Q, params=rt.params(max_tokens=2))
    assert any("bandit state unusable" in r.getMessage() for r in caplog.records)
    assert len(list(tmp_path.glob("bandit.npz.bad-*"))) == 1
    assert result.decision is not None and result.decision["bandit"]["updates"] == 0


def test_with_a_router_the_context_is_its_two_probabilities(
    engine: Engine, gateway: RunningGateway, tmp_path: Path, router: LearnedRouter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = save_router(router, tmp_path / "router")
    _cloud_is_better(tmp_path / "bandit.npz")  # learned without a router: another layout
    with caplog.at_level(logging.WARNING, logger="tandem.router.online"), \
            _runtime(engine, gateway, tmp_path, router=path) as rt:
        result = rt.generate(Q, params=rt.params(max_tokens=2))
        rt.feedback(result.id, True)
    assert any("bandit state unusable" in r.getMessage() for r in caplog.records)
    assert len(list(tmp_path.glob("bandit.npz.bad-*"))) == 1  # set aside, not lost
    assert result.decision is not None
    bandit, verdict = result.decision["bandit"], result.decision["router"]
    assert bandit["features"] == list(ROUTER_FEATURES) and bandit["updates"] == 0
    assert bandit["context"] == [1.0, verdict["p_local_right"], verdict["p_cloud_right"]]
    assert verdict["p_local_right"] == pytest.approx(
        float(router.p_local_ok([Q[0]["content"]])[0]))
    learned = OnlineRouter.load(tmp_path / "bandit.npz")
    assert (learned.features, learned.updates) == (ROUTER_FEATURES, 1)


def test_a_running_runtime_refuses_to_change_the_bandits_layout(
    engine: Engine, gateway: RunningGateway, tmp_path: Path, router: LearnedRouter,
) -> None:
    first = save_router(router, tmp_path / "first")
    second = save_router(router.with_threshold(0.3), tmp_path / "second")
    with _runtime(engine, gateway, tmp_path, router=first) as rt:
        policy = rt.config.policy
        rt.config = rt.config.replace(policy=replace(policy, router_path=str(second)))
        assert rt.config.policy.router_path == str(second)  # same layout: taken
        with pytest.raises(ValueError, match=r"cannot change policy.router_path \(to or from"):
            rt.config = rt.config.replace(policy=replace(policy, router_path=""))
        assert rt.config.policy.router_path == str(second)  # not half applied
    with _runtime(engine, gateway, tmp_path, bandit=False) as rt:  # bandit off: no layout
        rt.config = rt.config.replace(policy=replace(rt.config.policy, router_path=str(first)))
        assert rt.config.policy.router_path == str(first)


def test_the_live_loop_learns_from_verdicts_on_labelled_queries(
    router: LearnedRouter, tmp_path: Path,
) -> None:
    """What `POST /v1/feedback` does, replayed: each query's context is built from the
    router's verdict as `Runtime.plan` builds it, the bandit picks an arm, and the labelled
    correctness of that arm's model is the user's verdict. The greedy policy's value on
    other queries rises above both fixed policies."""
    data = load_routing_data(DATA / "mmlu.csv.gz")
    data = data.subset(np.random.default_rng(3).permutation(len(data))[800:4300])
    replay, ev = data.subset(range(2000)), data.subset(range(2000, 3500))
    online = OnlineRouter.fresh(tmp_path / "bandit.npz", cloud_cost=0.1,
                                features=ROUTER_FEATURES)

    def contexts(prompts: tuple[str, ...]) -> np.ndarray:
        return np.array([context_vector(ROUTER_FEATURES, router.verdict(q), 0, ())
                         for q in prompts])

    def value() -> float:
        cloud = online.bandit.greedy_cloud(eval_ctx, online.cloud_cost)
        return float(np.where(cloud, ev.strong - 0.1, ev.weak).mean())

    eval_ctx = contexts(ev.prompts)
    before = value()
    for x, weak, strong in zip(contexts(replay.prompts), replay.weak, replay.strong,
                               strict=True):
        decision = {"bandit": online.verdict(tuple(x)).to_dict()}
        source = decision["bandit"]["arm"]
        assert online.learn(decision, source, bool(strong if source == "cloud" else weak))
    after = value()
    assert online.updates == 2000
    assert before == pytest.approx(float(ev.weak.mean()))  # untrained: all local
    # 0.672 untrained, 0.720 after (0.719 when the price was learned); always cloud 0.704
    assert after > max(float(ev.weak.mean()), float(ev.strong.mean()) - 0.1) + 0.005


def test_the_cascade_credit_check_values_both_rules_against_fixed_policies(
    router: LearnedRouter,
) -> None:
    data = load_routing_data(DATA / "mmlu.csv.gz")
    held = data.subset(np.random.default_rng(3).permutation(len(data))[800:1400])
    halves = BanditHalves.of(router, held, seed=1)
    out = bandit_cascade(halves, seed=1)
    cells = out["cells"]
    assert len(cells) == 18 and {(c["auroc"], c["escalated"]) for c in cells} == {
        (a, e) for a in (0.65, 0.78) for e in (0.15, 0.3, 0.5)}
    ev = halves.ev
    for cell in cells:
        assert cell["always_cloud"] == pytest.approx(ev.strong.mean() - cell["cost"], abs=1e-4)
        # Cascading is worth at least the device alone less the cloud price on what escalates.
        assert cell["always_cascade"] >= ev.weak.mean() - cell["escalated"] * cell["cost"] - 0.02
    diffs = [c["chosen"]["value_median"] - c["answered"]["value_median"] for c in cells]
    assert out["chosen_minus_answered"]["mean"] == pytest.approx(np.mean(diffs), abs=1e-4)
    # The credit rule changes what is learned: the cloud shares differ somewhere.
    assert any(c["chosen"]["cloud_share_median"] != c["answered"]["cloud_share_median"]
               for c in cells)


def test_a_device_answer_the_cloud_had_a_part_in_teaches_the_bandit_nothing(
    engine: Engine, gateway: RunningGateway, tmp_path: Path
) -> None:
    # A continuation of a half-sent cloud answer is logged as local with the cloud's tokens:
    # neither arm alone earned its verdict. (Made here by marking a logged answer so.)
    with _runtime(engine, gateway, tmp_path) as rt:
        assert rt.telemetry is not None
        mixed = rt.generate(Q, params=rt.params(max_tokens=4))
        plain = rt.generate(Q, params=rt.params(max_tokens=4))
        with rt.telemetry._lock:
            rt.telemetry._db.execute(
                "UPDATE answers SET source = 'local', cloud_tokens = 40 WHERE id = ?",
                (mixed.id,))
        rt.feedback(mixed.id, False)
        assert not (tmp_path / "bandit.npz").exists()  # nothing learned, nothing saved
        assert rt.telemetry.answer(mixed.id)["feedback"] == 0  # type: ignore[index]
        rt.feedback(plain.id, True)
    assert OnlineRouter.load(tmp_path / "bandit.npz").updates == 1
