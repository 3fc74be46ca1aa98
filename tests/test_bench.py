"""Benchmark command line: subcommands and flags, and one tiny run that prints its JSON line."""

from __future__ import annotations

import json

import pytest

from twostream.bench.__main__ import build_parser, main


def test_parser_has_every_benchmark_and_the_flow_backends():
    parser = build_parser()
    for command in ("decode", "store", "flow", "loader", "train"):
        assert parser.parse_args([command]).command == command
    args = parser.parse_args(["flow", "--backend", "torch", "--size", "64x48", "--batch-size", "8"])
    assert (args.backend, args.size, args.batch_size, args.pairs) == ("torch", "64x48", 8, None)
    assert parser.parse_args(["flow"]).backend == "opencv"
    with pytest.raises(SystemExit):
        parser.parse_args(["flow", "--backend", "cuda"])


def test_flow_torch_backend_prints_one_json_line_with_its_ratio(capsys, tmp_path):
    main(["flow", "--backend", "torch", "--pairs", "3", "--repeats", "1", "--size", "48x32",
          "--processes", "1", "--device", "cpu", "--params", str(tmp_path / "absent.yaml")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert (result["bench"], result["backend"], result["size"], result["pairs"]) == ("flow", "torch", "48x32", 3)
    assert result["tvl1"]["epsilon"] == 0.01  # no params file: OpenCV's own defaults
    assert result["ratio"] == pytest.approx(result["torch_pairs_per_s"] / result["opencv_pairs_per_s"], rel=0.01)
    assert 0 <= result["epe_mean"] < 0.15 and len(result["iterations_per_pair"]) >= 1


def test_flow_loader_benchmark_fits_the_flow_scale_as_training_does(capsys, tmp_path):
    main(["loader", "--modality", "flow", "--seconds", "0.5", "--batch", "8", "--shards", str(tmp_path / "none")])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (result["bench"], result["modality"], result["shape"][1]) == ("loader", "flow", 4)
    assert result["loader_samples_per_s"] > 0 and result["train_samples_per_s"] > 0
    assert result["ratio"] == pytest.approx(result["loader_samples_per_s"] / result["train_samples_per_s"], rel=0.01)
