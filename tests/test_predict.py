"""predict: the pipeline's own samples for a new video, both streams, the fusion, and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, set_params, venv_env
from twostream.__main__ import main
from twostream.runtime.config import (
    ClipConfig, DemoConfig, FlowConfig, FramesConfig, FuseConfig, ResampleConfig, ShardsConfig, load_params,
)
from twostream.ingest.demo import render_video, video_seeds
from twostream.learn.dataset import ShardDataset, ViewDataset
from twostream.learn.engine import save_checkpoint
from twostream.motion.flow import extract_flow
from twostream.ingest.frames import extract_frames
from twostream.evaluate.fusion import AverageFusion, SVMFusion, save_fusion
from twostream.runtime.jsonio import write_json
from twostream.learn.models import build_model
from twostream.evaluate.predict import FeatureParams, PredictError, clip_samples, predict_video
from twostream.ingest.resample import resample_videos
from twostream.learn.scoring import Dist, load_checkpoint, model_from_checkpoint, predict, score_samples
from twostream.motion.sg3i import build_sg3i
from twostream.samples.shards import build_shards
from twostream.ingest.videowriter import write_video

CLASSES = ["clap", "jump", "kick", "wave"]
# 1.5 s at 30 fps -> 9 frames at 6 fps -> clips at 0, 3, 6 (3 frames every 3): 3 clips
TINY = {"frames": {"width": 32, "height": 32}, "resample": {"fps": 6}, "clip": {"frames": 3, "step": 3},
        "flow": {"epsilon": 0.1, "nscales": 2, "warps": 2, "inner_iterations": 5, "outer_iterations": 2,
                 "median_filtering": 1, "stack": 2, "workers": 1, "threads": 1}}
CROP = 28


def demo_frames(cls: str = "wave", seconds: float = 1.5) -> np.ndarray:
    """``(T, 48, 64, 3) uint8`` frames of one synthetic demo video."""
    cfg = DemoConfig(classes=8, videos_per_class=1, seconds=seconds, width=64, height=48, fps=30,
                     train_fraction=0.6, test_fraction=0.3, layout="hmdb51", workers=1)
    return render_video(cls, cfg, video_seeds(0, 0, 0)[1])


def checkpoint(modality: str, channels: int, seed: int) -> dict:
    """A self-describing stream checkpoint of a random tiny ResNet-18 (the keys ``train`` writes)."""
    torch.manual_seed(seed)
    model = build_model("resnet18", len(CLASSES), channels, "none", 16, 0.0)
    return {"format": 2, "modality": modality, "classes": CLASSES, "in_channels": channels, "crop": CROP,
            "flow_scale": 0.4 if modality == "flow" else None, "params": {"train": {"batch_size": 2}},
            "model_config": {"backbone": "resnet18", "pretrained": "none", "hidden": 16, "dropout": 0.0},
            "shard_params": {"clip": TINY["clip"], "flow": {"stack": 2, "bound": 20.0},
                             "shards": {"clips_per_shard": 64}},
            "model": model.state_dict()}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Path:
    """params.yaml (tiny), models/{spatial,temporal,fusion}.pt and the video as avi and mp4."""
    root = tmp_path_factory.mktemp("predict")
    set_params(root, REPO / "params.yaml", **TINY, fusion="average")
    params = load_params(root / "params.yaml")
    save_checkpoint(root / "models" / "spatial.pt", checkpoint("rgb", 3, 0))
    save_checkpoint(root / "models" / "temporal.pt", checkpoint("flow", 4, 1))
    save_fusion(root / "models" / "fusion.pt", "average", FuseConfig(**params["fuse"]), 0, AverageFusion([1, 1])
                .fit([], None, None), CLASSES)
    frames = demo_frames()
    write_video(root / "clip name (1).avi", frames, 30)
    write_video(root / "clip.mp4", frames, 30, codec="h264")
    write_video(root / "short.avi", frames[:8], 30)  # 8 frames -> 2 at 6 fps: no 3-frame clip
    (root / "text.avi").write_text("not a video\n")
    return root


def test_samples_are_the_shards_of_the_pipeline(setup, tmp_path):
    """The same video through the stages' functions gives bit-identical shard samples."""
    params = load_params(setup / "params.yaml")
    fp = FeatureParams.from_params(params)
    video = str(setup / "clip name (1).avi")
    write_json(tmp_path / "index.json", [{"path": video, "class": "clap", "label": 0, "role": "test"}])
    extract_frames(tmp_path / "index.json", tmp_path / "frames", tmp_path / "frames.json",
                   FramesConfig(**{**params["frames"], "workers": 1}), params["resample"]["fps"])
    resample_videos(tmp_path / "index.json", tmp_path / "frames", tmp_path / "resample.json",
                    tmp_path / "sheet.png", ResampleConfig(**params["resample"]), fp.clip.frames)
    build_sg3i(tmp_path / "index.json", tmp_path / "frames", tmp_path / "resample.json", tmp_path / "sg3i", fp.clip)
    extract_flow(tmp_path / "index.json", tmp_path / "frames", tmp_path / "resample.json", tmp_path / "flow",
                 tmp_path / "flow.json", FlowConfig(**params["flow"]), fp.clip)
    build_shards(tmp_path / "index.json", tmp_path / "frames", tmp_path / "resample.json", tmp_path / "sg3i",
                 tmp_path / "flow", tmp_path / "shards", tmp_path / "previews", ClipConfig(**params["clip"]),
                 fp.flow.stack, fp.flow.bound, ShardsConfig(**params["shards"]))
    samples = clip_samples(video, fp)
    assert {m: s.shape for m, s in samples.items()} == {"rgb": (3, 32, 32, 3), "sg3i": (3, 32, 32, 3),
                                                        "flow": (3, 32, 32, 4)}
    for modality, x in samples.items():  # the shards' references, read back from the stores
        data = ShardDataset(tmp_path / "shards", modality, "test", False, 1, 1.0)
        np.testing.assert_array_equal(x, np.stack([data.raw(i) for i in range(len(data))]))
    # and the CLI scores them as the train stage scores its shards: one code path (scoring.predict over
    # the checkpoint's network and transform, the same batches), so the scores are equal bit for bit
    for name in ("spatial", "temporal"):
        ck = load_checkpoint(setup / "models" / f"{name}.pt")
        data = ShardDataset(tmp_path / "shards", ck["modality"], "test", False, ck["crop"], ck["flow_scale"])
        for crops in (1, 10):  # the score stage's views of the shards (evaluation.score_roles)
            stage, _ = predict(model_from_checkpoint(ck), ViewDataset(data, 0, crops), ck["params"]["train"][
                "batch_size"], 0, Dist(0, 1, torch.device("cpu")))
            np.testing.assert_array_equal(score_samples(ck, samples[ck["modality"]], crops=crops), stage)


def test_predict_video_fuses_both_streams(setup):
    result = predict_video(setup / "clip name (1).avi", setup / "models", setup / "params.yaml")
    assert (result.classes, result.method, result.clips) == (CLASSES, "average", 3)
    assert result.probs.shape == (4,) and set(result.streams) == {"spatial", "temporal"}
    np.testing.assert_allclose(result.probs, (result.streams["spatial"] + result.streams["temporal"]) / 2,
                               atol=1e-7)
    np.testing.assert_allclose(result.probs.sum(), 1.0, atol=1e-6)
    top = result.top(3)
    assert [c for c, _ in top] == [CLASSES[i] for i in np.argsort(-result.probs, kind="stable")[:3]]
    assert top[0][1] >= top[1][1] >= top[2][1]
    mp4 = predict_video(setup / "clip.mp4", setup / "models", setup / "params.yaml")
    assert mp4.clips == 3 and mp4.probs.shape == (4,)


def test_learned_fusion_from_the_fitted_file(setup, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for name in ("spatial.pt", "temporal.pt"):
        (models / name).write_bytes((setup / "models" / name).read_bytes())
    rng = np.random.default_rng(0)
    p = [rng.dirichlet(np.ones(4), 40), rng.dirichlet(np.ones(4), 40)]
    svm = SVMFusion(1.0, 0).fit(p, np.arange(40) % 4, np.arange(40))
    save_fusion(models / "fusion.pt", "svm", FuseConfig(**load_params(setup / "params.yaml")["fuse"]), 0, svm,
                CLASSES)
    result = predict_video(setup / "clip name (1).avi", models, setup / "params.yaml")
    assert result.method == "svm"
    np.testing.assert_allclose(result.probs.sum(), 1.0, atol=1e-9)
    assert not np.allclose(result.probs, (result.streams["spatial"] + result.streams["temporal"]) / 2)
    (models / "fusion.pt").unlink()
    with pytest.raises(PredictError, match="no fitted fusion .*fusion.pt for fusion 'svm'"):
        params = tmp_path / "params.yaml"
        params.write_text((setup / "params.yaml").read_text().replace("fusion: average", "fusion: svm"))
        predict_video(setup / "clip name (1).avi", models, params)
    assert predict_video(setup / "clip name (1).avi", models, setup / "params.yaml").method == "average"


def test_command_prints_top_k_and_json(setup, capsys):
    args = ["predict", str(setup / "clip name (1).avi"), "--models", str(setup / "models"),
            "--params", str(setup / "params.yaml")]
    assert main(args + ["--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("clip name (1).avi: 3 clips, average fusion") and len(lines) == 4
    assert [line.split()[0] for line in lines[1:]] == ["1.", "2.", "3."]
    assert main(args + ["--json", "--top", "2"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["method"] == "average" and doc["clips"] == 3 and len(doc["top"]) == 2
    assert set(doc["streams"]) == {"spatial", "temporal"} and set(doc["top"][0]) == {"class", "probability"}
    assert doc["top"][0]["class"] in CLASSES and doc["top"][0]["probability"] >= doc["top"][1]["probability"]


@pytest.mark.parametrize("video, message", [
    ("short.avi", "too short: 8 frames at 30 fps keep 2 at resample.fps 6; a clip needs clip.frames = 3"),
    ("text.avi", "text.avi: cannot open"),
    ("missing.mp4", "missing.mp4: file not found"),
])
def test_bad_videos_give_one_line_and_status_1(setup, capsys, video, message):
    code = main(["predict", str(setup / video), "--models", str(setup / "models"),
                 "--params", str(setup / "params.yaml")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("predict: error: ") and message in err and err.count("\n") == 1


def test_mismatched_params_and_missing_models_are_errors(setup, tmp_path, capsys):
    set_params(tmp_path, setup / "params.yaml", clip={"step": 2})
    video = str(setup / "clip name (1).avi")
    assert main(["predict", video, "--models", str(setup / "models"), "--params", str(tmp_path / "params.yaml")]) == 1
    assert "the spatial model was trained with clip {'frames': 3, 'step': 3}, params.yaml says" in \
        capsys.readouterr().err
    assert main(["predict", video, "--models", str(tmp_path), "--params", str(setup / "params.yaml")]) == 1
    assert "no spatial stream model" in capsys.readouterr().err
    old = load_checkpoint(setup / "models" / "spatial.pt")
    (tmp_path / "old").mkdir()
    save_checkpoint(tmp_path / "old" / "spatial.pt", {**old, "format": 1})
    (tmp_path / "old" / "temporal.pt").write_bytes((setup / "models" / "temporal.pt").read_bytes())
    assert main(["predict", video, "--models", str(tmp_path / "old"), "--params", str(setup / "params.yaml")]) == 1
    assert "the spatial model is a format-1 checkpoint without its flow scale: retrain it" in capsys.readouterr().err


def test_module_entry_point_has_no_traceback(setup):
    proc = subprocess.run([sys.executable, "-m", "twostream", "predict", str(setup / "text.avi"), "--models",
                           str(setup / "models"), "--params", str(setup / "params.yaml")], env=venv_env(),
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("predict: error: ") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr


def test_predict_scores_the_views_of_params(setup, tmp_path):
    """`views` of params.yaml: one snippet (the middle clip of 3) through 3 crops, as the score stage."""
    set_params(tmp_path, setup / "params.yaml", views={"snippets": 1, "crops": 3})
    result = predict_video(setup / "clip name (1).avi", setup / "models", tmp_path / "params.yaml")
    fp = FeatureParams.from_params(load_params(tmp_path / "params.yaml"))
    samples = clip_samples(setup / "clip name (1).avi", fp)
    ck = load_checkpoint(setup / "models" / "spatial.pt")
    expected = score_samples(ck, samples["rgb"][[1]], crops=3)[0]
    assert result.clips == 1
    np.testing.assert_array_equal(result.streams["spatial"], expected.astype(np.float64))
