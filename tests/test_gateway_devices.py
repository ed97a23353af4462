"""The device registry: a file replaced on disk is seen by a running gateway, and enrolling one
name twice at once issues one credential."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_gateway import devices
from cloud_gateway.devices import DeviceRegistry
from cloud_gateway.errors import ConfigurationError
from cloud_gateway.keys import load_identity
from cloud_gateway.protocol import DeviceCredential
from tests.conftest_gateway import GatewayFactory, GatewayHome, RunningGateway
from tests.test_gateway import error_code, gateway_log, post, sealed


def _answer(gw: RunningGateway, credential: str) -> tuple[int, str]:
    resp = post(gw, sealed(gw, credential=credential)[0])
    return resp.status_code, "" if resp.status_code == 200 else error_code(resp)


def _answer_within(
    gw: RunningGateway, credential: str, expected: tuple[int, str], timeout_s: float = 5.0
) -> tuple[int, str]:
    """The gateway's answer once it is `expected`, or the last one after `timeout_s`."""
    end = time.monotonic() + timeout_s
    while True:
        got = _answer(gw, credential)
        if got == expected or time.monotonic() > end:
            return got
        time.sleep(0.1)


def _distribute(master: Path, state_dir: Path) -> None:
    """Replace the gateway's registry as rsync, Ansible or a ConfigMap do: a copy beside it,
    renamed over it (a new file, a new inode)."""
    tmp = state_dir / ".devices.sqlite3.tmp"
    shutil.copyfile(master, tmp)
    os.replace(tmp, state_dir / "devices.sqlite3")


def test_a_registry_replaced_on_disk_is_seen_by_the_running_gateway(
    start_gateway: GatewayFactory, gateway_home: GatewayHome, tmp_path: Path
) -> None:
    # The registry is kept on another host (here: folder) and distributed to the replica.
    master = tmp_path / "master" / "devices.sqlite3"
    master.parent.mkdir()
    shutil.copyfile(gateway_home.state_dir / "devices.sqlite3", master)
    gw = start_gateway(device_cache_s=0.2)
    assert _answer(gw, gateway_home.credential) == (200, "")
    identity = load_identity(gateway_home.state_dir).public_key().public_bytes_raw()

    registry = DeviceRegistry(master)
    tablet = registry.enroll("tablet", identity).encode()
    registry.close()
    assert _answer(gw, tablet) == (401, "bad_signature")  # not on the replica yet
    _distribute(master, gateway_home.state_dir)
    assert _answer_within(gw, tablet, (200, "")) == (200, "")  # an enrollment

    registry = DeviceRegistry(master)
    registry.revoke("phone")
    registry.close()
    _distribute(master, gateway_home.state_dir)
    # A revocation: the stolen credential stops working within seconds, not at a restart.
    assert _answer_within(gw, gateway_home.credential, (403, "revoked_device")) == (
        403,
        "revoked_device",
    )
    assert _answer(gw, tablet) == (200, "")


def test_a_bad_replacement_is_logged_once_and_a_good_one_is_read_as_it_is_on_disk(
    tmp_path: Path,
) -> None:
    path = tmp_path / "devices.sqlite3"
    registry = DeviceRegistry(path)  # re-stat'ed at most once a second
    registry.enroll("phone", bytes(32))  # still in this connection's write-ahead log
    with gateway_log() as records:
        tmp = tmp_path / "garbage.tmp"
        tmp.write_text("not SQLite\n")
        os.replace(tmp, path)
        time.sleep(1.05)
        # The registry answers from the file it has until a good one arrives.
        assert [d.name for d in registry.list()] == ["phone"]
        assert [d.name for d in registry.list()] == ["phone"]
        other = DeviceRegistry(tmp_path / "other.sqlite3")
        other.enroll("tablet", bytes(32))
        other.close()
        os.replace(tmp_path / "other.sqlite3", path)
        time.sleep(1.05)
        # The new file's own rows, not the old file's pages left in the -wal beside it.
        assert [d.name for d in registry.list()] == ["tablet"]
        assert registry.get("phone") is None
    assert [r.getMessage() for r in records] == [
        "device registry not reloaded",
        "device registry reloaded",
    ]
    assert "is not a device registry" in records[0].fields["problem"]  # type: ignore[attr-defined]
    registry.close()
    check = DeviceRegistry(path)  # and the file itself is the one distributed, intact
    assert [d.name for d in check.list()] == ["tablet"]
    check.close()


def test_a_replacement_waits_while_another_connection_reads_the_old_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "devices.sqlite3"
    registry = DeviceRegistry(path, recheck_s=0.0)
    registry.enroll("phone", bytes(32))  # in the write-ahead log beside the path
    reader = sqlite3.connect(path, isolation_level=None)  # e.g. a `tandem gateway devices`
    reader.execute("BEGIN")
    assert reader.execute("SELECT name FROM devices").fetchall() == [("phone",)]
    other = DeviceRegistry(tmp_path / "other.sqlite3")
    other.enroll("tablet", bytes(32))
    other.close()
    os.replace(tmp_path / "other.sqlite3", path)
    with gateway_log() as records:
        # Its log cannot be emptied while it is read: the old file stays in service.
        assert [d.name for d in registry.list()] == ["phone"]
        assert [d.name for d in registry.list()] == ["phone"]
        reader.execute("COMMIT")
        reader.close()
        assert [d.name for d in registry.list()] == ["tablet"]
    assert [r.getMessage() for r in records] == [
        "device registry not reloaded",
        "device registry reloaded",
    ]
    assert "write-ahead log is in use" in records[0].fields["problem"]  # type: ignore[attr-defined]
    registry.close()


class _EnrolledMeanwhile:
    """Stands in for `Ed25519PrivateKey` in `cloud_gateway.devices`: while the first
    enrollment makes its key, a second `enroll` of the same name (another process: its own
    connection) runs to completion."""

    def __init__(self, other: DeviceRegistry, name: str) -> None:
        self.other, self.name = other, name
        self.winner: DeviceCredential | None = None
        self._running = False

    def generate(self) -> Ed25519PrivateKey:
        if self.winner is None and not self._running:
            self._running = True  # the second enrollment makes its own key here too
            self.winner = self.other.enroll(self.name, bytes(32))
        return Ed25519PrivateKey.generate()


def test_two_enrollments_of_one_name_at_once_issue_one_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "devices.sqlite3"
    first, second = DeviceRegistry(path), DeviceRegistry(path)
    meanwhile = _EnrolledMeanwhile(second, "tablet")
    monkeypatch.setattr(devices, "Ed25519PrivateKey", meanwhile)
    # The first run must lose: the name was taken while it ran. (It used to check before
    # its transaction and then overwrite the second's key: two credentials, one dead.)
    with pytest.raises(ConfigurationError, match="'tablet' is already enrolled"):
        first.enroll("tablet", bytes(32))
    winner = meanwhile.winner
    assert winner is not None
    record = first.get("tablet")
    assert record is not None
    assert record.public_key == winner.signing_key().public_key().public_bytes_raw()
    first.close()
    second.close()


def test_concurrent_enroll_runs_of_one_name_issue_one_working_credential(
    tmp_path: Path,
) -> None:
    # Two `tandem gateway enroll NAME --out FILE` processes at once, several times over.
    import subprocess
    import sys

    from tests.conftest_gateway import REPO

    state = tmp_path / "state"
    env = {**os.environ, "TANDEM_GATEWAY_STATE_DIR": str(state)}
    cmd = [sys.executable, "-m", "cloud_gateway"]
    subprocess.run([*cmd, "keygen"], env=env, cwd=REPO, check=True, capture_output=True)
    for round_ in range(4):
        name = f"dev{round_}"
        procs = [
            subprocess.Popen(
                [*cmd, "enroll", name, "--out", str(tmp_path / f"{name}.{k}.cred")],
                env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for k in (0, 1)
        ]
        results = [(p.wait(timeout=60), p.communicate()[1]) for p in procs]
        assert sorted(code for code, _ in results) == [0, 2], results
        loser_err = next(err for code, err in results if code == 2)
        assert f"device {name!r} is already enrolled" in loser_err
        (cred_file,) = [tmp_path / f"{name}.{k}.cred" for k in (0, 1)
                        if (tmp_path / f"{name}.{k}.cred").exists()]
        credential = DeviceCredential.parse(cred_file.read_text())
        registry = DeviceRegistry(state / "devices.sqlite3")
        record = registry.get(name)
        registry.close()
        assert record is not None
        assert record.public_key == credential.signing_key().public_key().public_bytes_raw()


def test_the_gateway_keeps_serving_through_a_registry_replacement(
    start_gateway: GatewayFactory, gateway_home: GatewayHome, tmp_path: Path
) -> None:
    # Replaced several times in a row, mid-traffic: every answer is a 200, none a 5xx.
    master = tmp_path / "devices.sqlite3"
    shutil.copyfile(gateway_home.state_dir / "devices.sqlite3", master)
    gw = start_gateway(device_cache_s=0.0)
    statuses = []
    for _ in range(5):
        _distribute(master, gateway_home.state_dir)
        statuses.append(_answer(gw, gateway_home.credential))
    assert statuses == [(200, "")] * 5
    assert httpx.get(gw.url + "/readyz").status_code == 200
