"""The online bandit in the live runtime: context, persistence, and learning from feedback."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import numpy as np
import pytest

from kernels import Engine
from runtime.config import load_config
from runtime.errors import ConfigError
from runtime.facade import Runtime
from runtime.router.base import RouterFileError, RouterVerdict
from runtime.router.online import DIM, FEATURES, OnlineRouter, context_vector, default_path
from tests.conftest_gateway import RunningGateway
from tests.device_server import serve_in_thread

Q = [{"role": "user", "content": "Name a fruit."}]


def _runtime(engine: Engine, gateway: RunningGateway, folder: Path, *, mode: str = "prefer-local",
             bandit: bool = True) -> Runtime:
    """A runtime with the bandit on, configured the way a user would (environment keys)."""
    cfg = load_config(env={
        "TANDEM_RUNTIME_MODE": mode,
        "TANDEM_RUNTIME_TELEMETRY_PATH": str(folder / "telemetry.sqlite3"),
        "TANDEM_OFFLOAD_URL": gateway.url,
        "TANDEM_OFFLOAD_CREDENTIAL": gateway.home.credential,
        "TANDEM_POLICY_BANDIT": "true" if bandit else "false",
        "TANDEM_POLICY_BANDIT_PATH": str(folder / "bandit.npz"),
    })
    return Runtime(cfg, engine=engine)


def _cloud_is_better(path: Path) -> OnlineRouter:
    """A saved bandit that has seen short prompts answered well by the cloud only."""
    online = OnlineRouter.fresh(path)
    for tokens in range(10, 80, 5):
        x = np.array(context_vector(None, tokens, ()))
        online.bandit.update(x, "cloud", 0.9)
        online.bandit.update(x, "local", 0.0)
    online.save()
    return online


def test_context_vector_follows_the_fixed_layout() -> None:
    verdict = RouterVerdict("lr", score=0.2, threshold=0.1, p_strong_wins=0.35)
    x = context_vector(verdict, 4095, ("math", "unknown-cue"))
    assert len(x) == DIM == len(FEATURES)
    assert dict(zip(FEATURES, x, strict=True)) == pytest.approx({
        "bias": 1.0, "p_strong_wins": 0.35, "log_prompt_tokens": 1.0,
        "cue_code": 0.0, "cue_math": 1.0, "cue_translation": 0.0})
    assert context_vector(None, 0, ())[:3] == (1.0, 0.5, 0.0)  # no router: "no idea"


def test_default_path_is_next_to_the_telemetry(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_path() == tmp_path / "tandem" / "bandit.npz"


def test_saved_state_loads_with_identical_bounds_and_config_from_the_caller(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state" / "bandit.npz"
    saved = _cloud_is_better(path)
    x = context_vector(None, 30, ())
    loaded = OnlineRouter.load(path, alpha=1.0, cloud_cost=0.1)
    assert loaded.updates == saved.updates == 28
    assert loaded.verdict(x) == saved.verdict(x)
    assert loaded.verdict(x).arm == "cloud"
    greedy = OnlineRouter.load(path, alpha=0.0, cloud_cost=0.3)
    assert greedy.bandit.config.alpha == 0.0 and greedy.cloud_cost == 0.3
    assert [p.name for p in path.parent.iterdir()] == ["bandit.npz"]  # no temporary left


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
    with pytest.raises(RouterFileError, match="was learned on context"):
        OnlineRouter.load(path)


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
    x = context_vector(None, 40, ("code",))
    decision = {"bandit": online.verdict(x).to_dict()}
    assert not online.learn(None, "local", True)
    assert not online.learn({"bandit": None}, "local", True)
    assert not online.learn(decision, "elsewhere", True)
    assert not (tmp_path / "bandit.npz").exists()
    assert online.learn(decision, "cloud", True)
    # One cloud answer judged good: reward 1 - 0.25 on the cloud arm, saved at once.
    mirror = OnlineRouter.fresh(tmp_path / "mirror.npz")
    mirror.bandit.update(np.array(x), "cloud", 0.75)
    assert OnlineRouter.load(tmp_path / "bandit.npz").verdict(x) == mirror.verdict(x)


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
        assert bandit["features"] == list(FEATURES) and len(bandit["context"]) == DIM
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


def test_runtime_with_a_corrupt_state_file_warns_and_starts_fresh(
    engine: Engine, gateway: RunningGateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "bandit.npz").write_bytes(b"\x00" * 64)
    with caplog.at_level(logging.WARNING, logger="tandem.router.online"), \
            _runtime(engine, gateway, tmp_path) as rt:
        result = rt.generate(Q, params=rt.params(max_tokens=2))
    assert any("bandit state unusable" in r.getMessage() for r in caplog.records)
    assert len(list(tmp_path.glob("bandit.npz.bad-*"))) == 1
    assert result.decision is not None and result.decision["bandit"]["updates"] == 0
