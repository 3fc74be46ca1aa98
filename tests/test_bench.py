"""Benchmark command line: subcommands and flags, and one tiny run that prints its JSON line."""

from __future__ import annotations

import json

import pytest

from twostream.bench.__main__ import build_parser, main
from twostream.bench.memory import clip_texture, scene_block
from twostream.ingest.videowriter import write_video


def test_parser_has_every_benchmark_and_the_flow_backends():
    parser = build_parser()
    for command in ("decode", "store", "flow", "loader", "train", "ray", "index"):
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
    main(["loader", "--modality", "flow", "--seconds", "0.5", "--batch", "8", "--reads", "8", "--repeats", "1",
          "--shards", str(tmp_path / "none")])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (result["bench"], result["modality"], result["size"], result["crop"]) == ("loader", "flow", "64x64", 56)
    compared = result["compare_train"]["flow_L2"]  # without --size: the DataLoader vs train comparison too
    assert compared["shape"] == [8, 4, 56, 56] and result["per_core"]["flow_L2"]["shape"] == [4, 56, 56]
    assert compared["loader_samples_per_s"] > 0 and compared["train_samples_per_s"] > 0
    assert compared["ratio"] == pytest.approx(compared["loader_samples_per_s"] / compared["train_samples_per_s"],
                                              rel=0.01)


def test_loader_benchmark_per_core_at_a_size(capsys):
    main(["loader", "--size", "96x64", "--crop", "56", "--modality", "all", "--stack", "2", "5",
          "--reads", "16", "--repeats", "2"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (result["bench"], result["size"], result["crop"], result["samples"]) == ("loader", "96x64", 56, 128)
    assert result["timed_samples"] == 32 and result["torch_threads"] == 1 and "compare_train" not in result
    per_core, rates = result["per_core"], result["per_core_samples_per_s"]
    channels = {"rgb": 3, "sg3i": 3, "flow_L2": 4, "flow_L5": 10}  # 2L for flow
    assert list(per_core) == list(rates) == list(result["per_core_wall_samples_per_s"]) == list(channels)
    for key, figures in per_core.items():
        assert figures["shape"] == [channels[key], 56, 56] and len(figures["runs"]) == 2
        assert rates[key] == figures["samples_per_s"] > 0 and figures["wall_samples_per_s"] > 0
        assert figures["pass"] == (figures["samples_per_s"] >= result["per_core_goal"] == 400)
        assert figures["read_share"] == pytest.approx(
            figures["read_ms"] / (figures["read_ms"] + figures["transform_ms"]), abs=0.01)
        assert figures["limit"] == ("read" if figures["read_ms"] > figures["transform_ms"] else "transform")
        assert figures["raw_bytes_per_sample"] == 64 * 96 * channels[key]
    assert result["per_core_pass"] == all(f["pass"] for f in per_core.values())
    assert result["ratio"] == pytest.approx(min(rates.values()) / 400, abs=0.01)
    for key in ("rgb", "sg3i"):  # stored raw, as shards.COMPRESSION says
        assert per_core[key]["compression"] == "none" and "inflate_ms" not in per_core[key]
        assert per_core[key]["stored_bytes_per_sample"] == per_core[key]["raw_bytes_per_sample"]
    for key in ("flow_L2", "flow_L5"):  # gzip 4: the smooth synthetic flow shrinks, noise keeps some bytes
        flow = per_core[key]
        assert flow["compression"] == "gzip 4" and flow["inflate_ms"] > 0
        assert 0.1 < flow["stored_bytes_per_sample"] / flow["raw_bytes_per_sample"] < 0.7
        assert list(flow["alternatives"]) == ["none", "lzf", "gzip 1"]
        none = flow["alternatives"]["none"]
        assert none["stored_bytes_per_sample"] == none["raw_bytes_per_sample"] == flow["raw_bytes_per_sample"]
    with pytest.raises(SystemExit, match="WxH"):
        main(["loader", "--size", "96"])


def test_loader_benchmark_defaults():
    args = build_parser().parse_args(["loader"])
    assert (args.modality, args.size, args.stack, args.crop, args.compare_train) == ("flow", None, [2, 5], None, False)
    assert build_parser().parse_args(["loader", "--modality", "all"]).modality == "all"


def _textured_videos(root, n=2, frames=30):
    """``n`` XviD files of ``frames`` 64x48 frames at 30 fps: a panning texture and a moving bar."""
    (root / "cls").mkdir(parents=True)
    for v in range(n):
        write_video(root / "cls" / f"v{v}.avi", scene_block(clip_texture(64, 48, seed=v), 0, frames), 30)
    return root


def test_decode_times_new_folders_and_counts_decoded_and_stored_frames(capsys, tmp_path):
    root = _textured_videos(tmp_path / "videos")
    main(["decode", "--root", str(root), "--repeats", "2", "--fps", "10", "--params", str(tmp_path / "absent.yaml")])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (result["bench"], result["videos"], result["fps"], result["size"]) == ("decode", 2, 10.0, "64x64")
    assert (result["frames"], result["stored_frames"]) == (60, 20)  # 10 of 30 native frames per video
    assert len(result["seconds"]["stage"]) == len(result["seconds"]["limit"]) == 2
    assert result["ratio"] == pytest.approx(result["stage_fps"] / result["limit_fps"], rel=0.01)


def test_store_compares_codecs_against_the_lossless_frames(capsys, tmp_path):
    root = _textured_videos(tmp_path / "videos")
    main(["store", "--root", str(root), "--size", "48x32", "--qualities", "50", "95", "--reads", "30",
          "--repeats", "2", "--pairs", "4", "--params", str(tmp_path / "absent.yaml")])
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert (result["bench"], result["size"], result["fps"], result["videos"]) == ("store", "48x32", 6.0, 2)
    assert (result["frames"], result["pairs"]) == (12, 4) and result["mean_flow_px"] > 0  # 6 of 30 per video
    c = result["candidates"]
    assert list(c) == ["raw", "png", "jpeg50", "jpeg95"]
    for lossless in (c["raw"], c["png"]):  # identical frames through the same TV-L1: identical flow
        assert lossless["mae"] == 0 and lossless["epe_px"] == 0
    assert 0 < c["jpeg95"]["mae"] < c["jpeg50"]["mae"] and c["jpeg50"]["epe_px"] > 0
    assert c["jpeg50"]["kib_per_frame"] < c["jpeg95"]["kib_per_frame"] < c["png"]["kib_per_frame"]
    assert c["raw"]["of_uncompressed"] <= 1
    for figures in c.values():
        assert figures["part_kib_per_frame"] > figures["kib_per_frame"]
        assert figures["decodes_per_s"] > 0 and figures["reads_per_s"] > 0
    with pytest.raises(SystemExit, match="1..100"):
        main(["store", "--root", str(root), "--qualities", "0"])


def test_frames_benchmark_defaults():
    store = build_parser().parse_args(["store"])
    assert (store.size, store.fps, store.qualities, store.pairs) == (None, None, [75, 90, 95], 24)
    assert build_parser().parse_args(["decode"]).fps is None


def test_index_benchmark_hashes_everything_once_then_nothing(capsys, tmp_path):
    main(["index", "--videos", "300", "--bytes", "2048", "--classes", "7", "--repeats", "1",
          "--keep", str(tmp_path / "bench")])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (result["bench"], result["videos"], result["bytes_per_video"]) == ("index", 300, 2048)
    for kind in ("one_thread", "all_cores", "reindex_cached"):
        assert result[kind]["files_per_s"] > 0 and len(result[kind]["seconds"]) == 1
    assert result["speedup_all_cores"] > 0 and result["kinetics400_reindex_seconds"] > 0
    lists = (tmp_path / "bench" / "tree" / "train.txt").read_text().splitlines()
    assert len(lists) == 240 and lists[0] == "clips/000/0000000.mp4 0"  # 4 in 5 in train
