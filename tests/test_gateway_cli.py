"""`tandem gateway ...` commands: keys on disk, credentials, revocation, config from env."""

from __future__ import annotations

import json
import os
import select
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cloud_gateway.cli import main
from cloud_gateway.config import GatewayConfig, load_gateway_config
from cloud_gateway.devices import DeviceRegistry
from cloud_gateway.errors import ConfigurationError
from cloud_gateway.keys import KeyRing, generate_key, list_keys
from cloud_gateway.protocol import DeviceCredential
from tests.conftest_gateway import REPO, free_port


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_keygen_writes_a_private_key_only_the_owner_can_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "keygen", "--state-dir", str(tmp_path), "--not-after", "7")
    assert code == 0
    key_id = out.split("\t")[0]
    private = tmp_path / "keys" / f"{key_id}.key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys" / "identity.key").stat().st_mode) == 0o600
    record = json.loads((tmp_path / "keys" / f"{key_id}.json").read_text())
    assert record["kem"] == "x25519" and "secret" not in json.dumps(record)
    assert 6.9 * 86400 < record["not_after"] - time.time() <= 7 * 86400


def test_keygen_refuses_a_validity_that_is_not_a_future_date_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for days in ("nan", "inf", "-inf", "0", "-1", "1e300"):
        code, out, err = run(capsys, "keygen", "--state-dir", str(tmp_path), f"--not-after={days}")
        assert (code, out) == (2, ""), days
        assert err.startswith("tandem gateway: a key's validity must be") and err.count("\n") == 1
    assert not (tmp_path / "keys").exists()


def test_two_keys_are_current_at_once_until_one_is_retired(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = str(tmp_path)
    first = run(capsys, "keygen", "--state-dir", state)[1].split("\t")[0]
    second = run(capsys, "keygen", "--state-dir", state, "--kem", "mlkem768-x25519")[1]
    second = second.split("\t")[0]
    assert {k.key_id for k in KeyRing(tmp_path).current()} == {first, second}
    assert run(capsys, "retire", "--state-dir", state, first)[0] == 0
    assert [k.key_id for k in KeyRing(tmp_path).current()] == [second]
    listing = run(capsys, "keys", "--state-dir", state)[1]
    assert f"{first}\tx25519\texpired" in listing
    assert f"{second}\tmlkem768-x25519\tcurrent" in listing
    assert len(list_keys(tmp_path)) == 2


def test_empty_listings_say_so_on_stderr_and_keep_stdout_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = str(tmp_path)
    code, out, err = run(capsys, "keys", "--state-dir", state)
    assert (code, out) == (0, "") and "no keys in" in err and "gateway keygen" in err
    code, out, err = run(capsys, "devices", "--state-dir", state)
    assert (code, out) == (0, "") and "no devices enrolled" in err
    code, out, err = run(capsys, "revoke", "--state-dir", state, "phone")
    assert code == 2 and "no device 'phone' is enrolled" in err
    assert list(tmp_path.iterdir()) == []  # listing and a failed revoke created nothing
    run(capsys, "keygen", "--state-dir", state)
    run(capsys, "enroll", "--state-dir", state, "phone")
    run(capsys, "revoke", "--state-dir", state, "phone")
    code, out, err = run(capsys, "devices", "--state-dir", state)
    assert (code, out, err) == (0, "phone\trevoked\n", "")


def test_enroll_prints_a_credential_bound_to_this_gateway(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = str(tmp_path)
    run(capsys, "keygen", "--state-dir", state)
    code, out, _ = run(capsys, "enroll", "--state-dir", state, "phone")
    assert code == 0
    cred = DeviceCredential.parse(out.strip())
    assert cred.device_id == "phone"
    ring = KeyRing(tmp_path)
    assert cred.gateway_identity == ring.identity.public_key().public_bytes_raw()
    registry = DeviceRegistry(tmp_path / "devices.sqlite3")
    record = registry.get("phone")
    registry.close()
    assert record is not None and not record.revoked
    assert record.public_key == cred.signing_key().public_key().public_bytes_raw()
    # The same name twice is refused, with the way out named.
    code, _, err = run(capsys, "enroll", "--state-dir", state, "phone")
    assert code == 2 and "--replace" in err


def test_enroll_to_a_file_and_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state, out_file = str(tmp_path), tmp_path / "tablet.cred"
    run(capsys, "keygen", "--state-dir", state)
    assert run(capsys, "enroll", "--state-dir", state, "tablet", "--out", str(out_file))[0] == 0
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600
    assert DeviceCredential.parse(out_file.read_text()).device_id == "tablet"
    assert run(capsys, "revoke", "--state-dir", state, "tablet")[1] == "revoked tablet\n"
    assert run(capsys, "devices", "--state-dir", state)[1] == "tablet\trevoked\n"
    code, _, err = run(capsys, "revoke", "--state-dir", state, "nobody")
    assert code == 2 and "no device 'nobody'" in err


def test_enroll_to_an_existing_file_takes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, taken = str(tmp_path), tmp_path / "taken.cred"
    taken.write_text("keep me\n")
    run(capsys, "keygen", "--state-dir", state)
    code, out, err = run(capsys, "enroll", "--state-dir", state, "tablet", "--out", str(taken))
    assert (code, out) == (2, "")
    assert err == f"tandem gateway: cannot write the credential to {taken}: File exists\n"
    assert taken.read_text() == "keep me\n"
    assert run(capsys, "devices", "--state-dir", state)[1] == ""  # the name is still free
    fresh = tmp_path / "tablet.cred"
    assert run(capsys, "enroll", "--state-dir", state, "tablet", "--out", str(fresh))[0] == 0
    # A name already taken leaves no credential file behind.
    again = tmp_path / "again.cred"
    code, _, err = run(capsys, "enroll", "--state-dir", state, "tablet", "--out", str(again))
    assert code == 2 and "--replace" in err and not again.exists()


def test_an_undelivered_credential_enrolls_nothing(tmp_path: Path) -> None:
    registry = DeviceRegistry(tmp_path / "devices.sqlite3")

    def disk_full(credential: DeviceCredential) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        registry.enroll("tablet", bytes(32), deliver=disk_full)
    assert registry.get("tablet") is None
    first = registry.enroll("tablet", bytes(32))
    with pytest.raises(OSError):
        registry.enroll("tablet", bytes(32), replace=True, deliver=disk_full)
    record = registry.get("tablet")
    assert record is not None
    assert record.public_key == first.signing_key().public_key().public_bytes_raw()
    registry.close()


def test_serving_without_keys_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "serve", "--state-dir", str(tmp_path), "--port", "0")
    assert code == 2
    assert "tandem gateway keygen" in err


def test_config_reads_its_environment_and_flags_win() -> None:
    env = {
        "TANDEM_GATEWAY_PORT": "9001",
        "TANDEM_GATEWAY_REDIS_URL": "redis://127.0.0.1:6390/0",
        "TANDEM_GATEWAY_CLOCK_WINDOW_S": "30",
    }
    config = load_gateway_config(env, {"port": 9002, "host": None})
    assert config == GatewayConfig(
        port=9002, redis_url="redis://127.0.0.1:6390/0", clock_window_s=30.0
    )
    with pytest.raises(ConfigurationError, match="TANDEM_GATEWAY_PORT must be an integer"):
        load_gateway_config({"TANDEM_GATEWAY_PORT": "eighty"})
    with pytest.raises(ConfigurationError, match="redis_url"):
        load_gateway_config({"TANDEM_GATEWAY_REDIS_URL": "localhost:6379"})


@pytest.mark.parametrize(
    "url", ["127.0.0.1:8000/v1", "ftp://127.0.0.1/v1", "http:///v1", "http://host:port/v1"]
)
def test_an_upstream_url_that_is_not_http_is_refused_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    with pytest.raises(ConfigurationError, match="upstream_url"):
        load_gateway_config({"TANDEM_GATEWAY_UPSTREAM_URL": url})
    args = ("serve", "--state-dir", str(tmp_path), "--port", "0", "--upstream-url", url)
    code, _, err = run(capsys, *args)
    assert code == 2
    assert f"upstream_url={url!r} must be an http:// or https:// URL with a host" in err


def test_http_and_https_upstream_urls_are_accepted() -> None:
    for url in ("http://127.0.0.1:8000/v1", "https://api.example.com/v1"):
        assert load_gateway_config({"TANDEM_GATEWAY_UPSTREAM_URL": url}).upstream_url == url


def test_the_default_state_dir_follows_xdg_state_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert GatewayConfig().state_path == tmp_path / "xdg" / "tandem" / "gateway"
    monkeypatch.setenv("XDG_STATE_HOME", "")  # empty counts as unset, as for the device
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home = tmp_path / "home"
    assert GatewayConfig().state_path == home / ".local" / "state" / "tandem" / "gateway"
    assert GatewayConfig(state_dir=str(tmp_path / "s")).state_path == tmp_path / "s"


# --- a state folder the commands cannot use: one line naming it, exit 2, no traceback ----


def _serve(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`tandem gateway serve` as its own process (it would block if it started serving)."""
    argv = [sys.executable, "-m", "cloud_gateway", "serve", "--state-dir", str(state),
            "--port", str(free_port()), "--upstream-url", f"http://127.0.0.1:{free_port()}/v1",
            *args]
    env = {**os.environ, "TANDEM_GATEWAY_LOG_LEVEL": "warning"}
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def test_a_state_dir_that_is_a_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "afile"
    state.write_text("")
    for command in (("keygen",), ("enroll", "phone"), ("devices",), ("keys",)):
        code, out, err = run(capsys, *command, "--state-dir", str(state))
        assert (code, out) == (2, ""), command
        assert err == f"tandem gateway: the state directory {state} is not a directory\n"


def test_a_device_registry_that_is_not_a_database_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "keygen", "--state-dir", str(tmp_path))
    (tmp_path / "devices.sqlite3").write_text("garbage, not SQLite\n")
    for command in (("devices",), ("enroll", "phone"), ("revoke", "phone")):
        code, out, err = run(capsys, *command, "--state-dir", str(tmp_path))
        assert (code, out) == (2, ""), command
        assert err.startswith(
            f"tandem gateway: cannot open the device registry {tmp_path / 'devices.sqlite3'}: "
        ), err
        assert err.count("\n") == 1
    done = _serve(tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("tandem gateway: cannot open the device registry ")
    assert done.stderr.count("\n") == 1


def test_serve_with_state_files_it_cannot_use_says_which_in_one_line(tmp_path: Path) -> None:
    for name, problem in (("usage.sqlite3", "cannot open the usage file"),
                          ("uncharged", "cannot use")):
        state = tmp_path / name.split(".")[0]
        generate_key(state, "x25519")
        if name == "uncharged":
            (state / name).write_text("")  # a file where a folder goes
        else:
            (state / name).mkdir()  # a folder where a file goes
        done = _serve(state)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"tandem gateway: {problem} {state / name}"), done.stderr
        assert done.stderr.count("\n") == 1
        assert "cannot listen" not in done.stderr


@pytest.mark.parametrize(
    "url",
    [
        "redis://:s3cret@127.0.0.1:notaport/0",
        "redis://:s3cret@127.0.0.1:6399/0?socket_timeout=soon",
    ],
)
def test_serve_with_a_redis_url_redis_cannot_parse_says_so_without_the_password(
    tmp_path: Path, url: str
) -> None:
    generate_key(tmp_path, "x25519")
    done = _serve(tmp_path, "--redis-url", url)
    assert done.returncode == 2
    assert done.stderr.startswith("tandem gateway: redis_url is invalid: "), done.stderr
    assert done.stderr.count("\n") == 1
    assert "s3cret" not in done.stderr


def test_keys_lists_the_keys_and_names_each_file_it_skips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = str(tmp_path)
    key_id = run(capsys, "keygen", "--state-dir", state)[1].split("\t")[0]
    (tmp_path / "keys" / "backup.json").write_text("{\n")
    code, out, err = run(capsys, "keys", "--state-dir", state)
    assert code == 0
    assert out.startswith(f"{key_id}\tx25519\tcurrent")
    assert out.count("\n") == 1
    assert err.startswith("tandem gateway: key file skipped: ") and err.count("\n") == 1
    assert "backup.json" in err
    assert [k.key_id for k in list_keys(tmp_path)] == [key_id]  # skipped, not raised


def test_enroll_on_a_state_dir_without_an_identity_issues_nothing_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A mistyped --state-dir (or another user's $HOME under sudo) must not mint a new
    # gateway identity and a credential no gateway can verify.
    typo = tmp_path / "gatewy"
    credential = tmp_path / "phone.cred"
    for extra in (("--out", str(credential)), ()):
        code, out, err = run(capsys, "enroll", "phone", "--state-dir", str(typo), *extra)
        assert (code, out) == (2, "")
        assert err == (
            f"tandem gateway: no gateway identity at {typo / 'keys' / 'identity.key'}:"
            " run `tandem gateway keygen`\n"
        )
    assert not typo.exists()
    assert not credential.exists()


def test_a_key_whose_private_file_is_missing_is_listed_unusable_and_serve_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = str(tmp_path)
    key_id = run(capsys, "keygen", "--state-dir", state)[1].split("\t")[0]
    private = tmp_path / "keys" / f"{key_id}.key"
    private.unlink()
    problem = (
        f"private key {private} is unreadable: [Errno 2] No such file or directory: '{private}'"
    )
    # serve: each problem on a line of its own (logging is not set up yet), then the verdict.
    done = _serve(tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"tandem gateway: key {key_id} unusable: {problem}",
        f"tandem gateway: no current key in {tmp_path}: run `tandem gateway keygen`",
    ]
    second = run(capsys, "keygen", "--state-dir", state)[1].split("\t")[0]
    code, out, err = run(capsys, "keys", "--state-dir", state)
    assert code == 0
    lines = [line.split("\t")[:3] for line in out.splitlines()]
    assert sorted(lines) == sorted(
        [[key_id, "x25519", "unusable"], [second, "x25519", "current"]]
    )
    assert err == f"tandem gateway: key {key_id} unusable: {problem}\n"
    assert [(k.key_id, k.problem) for k in list_keys(tmp_path) if k.key_id == key_id] == [
        (key_id, problem)
    ]


@pytest.mark.parametrize("days", ["0.000001", "0.04"])
def test_keygen_refuses_a_validity_under_an_hour(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], days: str
) -> None:
    code, out, err = run(capsys, "keygen", "--state-dir", str(tmp_path), "--not-after", days)
    assert (code, out) == (2, "")
    assert err == (
        "tandem gateway: a key's validity must be a number of days from 0.0417 (one hour)"
        f" to 36500, not {float(days)!r}\n"
    )
    assert not (tmp_path / "keys").exists()
    code, out, _ = run(capsys, "keygen", "--state-dir", str(tmp_path), "--not-after", "0.0417")
    assert code == 0
    (stored,) = list_keys(tmp_path)
    assert 3600 <= stored.published.not_after - time.time() <= 3604


def test_serve_on_port_zero_says_which_port_it_got(tmp_path: Path) -> None:
    generate_key(tmp_path, "x25519")
    argv = [sys.executable, "-m", "cloud_gateway", "serve", "--state-dir", str(tmp_path),
            "--port", "0", "--upstream-url", f"http://127.0.0.1:{free_port()}/v1"]
    env = {**os.environ, "TANDEM_GATEWAY_LOG_LEVEL": "warning"}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "serve --port 0 said nothing on stdout within 30 s"
        line = proc.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        assert port > 0
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        assert health.json() == {"status": "alive"}
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("ENGINE_CONTEXT_LENGTH", "-5"),
        ("ENGINE_CONTEXT_LENGTH", "63"),
        ("ENGINE_CONTEXT_LENGTH", "1048577"),
        ("ENGINE_THREADS", "-1"),
        ("ENGINE_THREADS", "1025"),
    ],
)
def test_engine_settings_out_of_the_runtimes_ranges_are_refused(var: str, value: str) -> None:
    field = var.lower()
    must = "64..1048576" if var == "ENGINE_CONTEXT_LENGTH" else "0..1024 (0 = one per usable CPU)"
    with pytest.raises(ConfigurationError) as info:
        load_gateway_config({f"TANDEM_GATEWAY_{var}": value})
    assert str(info.value) == (
        f"gateway config {field}={int(value)} is invalid: it must be in {must}"
    )


def test_engine_settings_at_the_ends_of_the_runtimes_ranges_are_accepted() -> None:
    for threads, context in ((0, 64), (1024, 1 << 20)):
        config = GatewayConfig(engine_threads=threads, engine_context_length=context)
        assert (config.engine_threads, config.engine_context_length) == (threads, context)


def _with_dead_reader(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run `argv` with stdout a pipe whose reader is already gone (`… | true`, decided: the
    read end is closed before the command starts, so its first write fails with EPIPE)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(argv, cwd=REPO, stdout=write, stderr=subprocess.PIPE, text=True,
                              timeout=120, check=False)
    finally:
        os.close(write)


TANDEM = [sys.executable, "-c", "import sys; from runtime.cli import main; sys.exit(main())"]


def test_a_reader_gone_ends_quietly_with_141_and_enrolls_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `tandem gateway keys | true` said "cannot use the state directory …: Broken pipe"
    # (exit 2); `enroll x1 | true` said the same, with x1 enrolled and its credential lost.
    state = str(tmp_path)
    assert run(capsys, "keygen", "--state-dir", state)[0] == 0
    for argv in ([*TANDEM, "gateway", "keys", "--state-dir", state],
                 [sys.executable, "-m", "cloud_gateway", "keys", "--state-dir", state],
                 [*TANDEM, "gateway", "enroll", "x1", "--state-dir", state],
                 [sys.executable, "-m", "cloud_gateway", "enroll", "x1", "--state-dir", state]):
        done = _with_dead_reader(argv)
        assert (done.returncode, done.stderr) == (141, ""), argv
    assert run(capsys, "devices", "--state-dir", state)[1] == ""  # nothing enrolled
    code, out, err = run(capsys, "enroll", "x1", "--state-dir", state)  # no --replace needed
    assert (code, err) == (0, "") and out.startswith("tdc1.")


def test_enroll_with_stdout_closed_enrolls_nothing(tmp_path: Path) -> None:
    state = str(tmp_path)
    generate_key(tmp_path, "x25519")
    closed = subprocess.run([*TANDEM, "gateway", "enroll", "x1", "--state-dir", state],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, timeout=120, check=False,
                            preexec_fn=lambda: os.close(1))
    assert closed.returncode == 2
    assert closed.stderr == ("tandem gateway: standard output is closed: nowhere to print the "
                             "credential (use --out FILE); nothing enrolled\n")
    registry = DeviceRegistry(tmp_path / "devices.sqlite3")
    assert registry.get("x1") is None
    registry.close()


def test_a_misspelt_gateway_variable_is_refused_naming_the_known_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # TANDEM_GATEWAY_TOKENS_PER_DAYS left the quota at its default (1,000,000) silently.
    with pytest.raises(ConfigurationError) as err:
        load_gateway_config({"TANDEM_GATEWAY_TOKENS_PER_DAYS": "5000"})
    message = str(err.value)
    assert message.startswith("unknown environment variable TANDEM_GATEWAY_TOKENS_PER_DAYS; "
                              "did you mean TANDEM_GATEWAY_TOKENS_PER_DAY? (the gateway reads "
                              "TANDEM_GATEWAY_<FIELD> for: HOST, PORT, STATE_DIR, ")
    assert "REQUESTS_PER_MINUTE, TOKENS_PER_DAY," in message and message.endswith("LOG_LEVEL)")
    with pytest.raises(ConfigurationError, match="the device's offload.url is "
                                                 "TANDEM_OFFLOAD_URL, not a gateway setting"):
        load_gateway_config({"TANDEM_GATEWAY_URL": "http://device-side-setting"})
    # The upstream API key's variable may carry the prefix: it is the gateway's own.
    env = {"TANDEM_GATEWAY_UPSTREAM_API_KEY_ENV": "TANDEM_GATEWAY_API_KEY",
           "TANDEM_GATEWAY_API_KEY": "sk-test", "TANDEM_GATEWAY_PORT": "9001"}
    assert load_gateway_config(env).upstream_api_key_env == "TANDEM_GATEWAY_API_KEY"
    with pytest.raises(ConfigurationError, match="TANDEM_GATEWAY_API_KEY"):  # not without
        load_gateway_config({"TANDEM_GATEWAY_API_KEY": "sk-test"})

    monkeypatch.setenv("TANDEM_GATEWAY_BOGUS", "1")
    code, out, err = run(capsys, "keys", "--state-dir", str(tmp_path))
    assert (code, out) == (2, "")
    assert err.startswith("tandem gateway: unknown environment variable TANDEM_GATEWAY_BOGUS ")
    assert err.count("\n") == 1
