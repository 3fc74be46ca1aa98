"""The per-video stages on a real Ray cluster (a head node on 127.0.0.1 with 2 CPUs, started
here): the same bytes as ``executor.kind: local``, a killed task retried, a node that cannot
read the inputs named, and Ray left unimported by the local path."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from conftest import free_port, texture
from twostream.runtime import executors
from twostream.motion import flow
from twostream.ingest import frames, parts
from twostream.runtime.config import ClipConfig, ExecutorConfig, FlowConfig, FramesConfig, ResampleConfig
from twostream.runtime.executors import ClusterError
from twostream.runtime.pools import WorkerDied
from twostream.ingest.resample import resample_videos
from twostream.ingest.videowriter import write_video

ray = pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[1]
FRAMES = FramesConfig(width=32, height=32, workers=2, max_failures=0.5, codec="png", quality=95)
FLOW = FlowConfig(tau=0.25, lambda_=0.15, theta=0.3, nscales=3, warps=5, epsilon=0.1, inner_iterations=30,
                  outer_iterations=10, scale_step=0.8, gamma=0.0, median_filtering=5, backend="opencv",
                  bound=20.0, stack=2, workers=2, threads=1, max_failures=0.5, codec="png", quality=95)
CLIP = ClipConfig(frames=3, step=3)
LENGTHS = (9, 7, 12, 8, 10)


@pytest.fixture(scope="module")
def cluster():
    """The address of a Ray head node on 127.0.0.1 with 2 CPUs, its workers in an empty folder."""
    with executors.local_cluster(2) as address:
        ray.init(address=address, logging_level="ERROR")
        assert ray.cluster_resources().get("CPU") == 2
        ray.shutdown()
        yield address


def on(address: str, **overrides) -> ExecutorConfig:
    values = dict(kind="ray", address=address, videos_per_task=1, cpus_per_task=1, gpus_per_task=0,
                  max_retries=3)
    return ExecutorConfig(**{**values, **overrides})


def digest(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def dataset(tmp_path) -> Path:
    """index.json of 5 tiny lossless 6-fps videos whose texture moves 1 px right per frame, and one
    that does not decode."""
    index = []
    for vid, n in enumerate(LENGTHS):
        big = texture(48, 48 + n, seed=vid, sigma=1.5)
        gray = np.stack([big[8:40, n - i:n - i + 32] for i in range(n)])
        path = tmp_path / "videos" / f"v{vid}.mkv"
        path.parent.mkdir(exist_ok=True)
        write_video(path, np.repeat(gray[..., None], 3, axis=-1), 6, codec="ffv1")
        index.append({"path": str(path), "class": f"c{vid % 2}", "label": vid % 2, "role": "train",
                      "key": f"c{vid % 2}/v{vid}.mkv"})
    (tmp_path / "videos" / "broken.avi").write_bytes(b"not a video")
    index.append({"path": str(tmp_path / "videos" / "broken.avi"), "class": "c0", "label": 0, "role": "train",
                  "key": "c0/broken.avi"})
    (tmp_path / "index.json").write_text(json.dumps(index))
    return tmp_path


def run_frames(root: Path, out: str, executor: ExecutorConfig | None = None) -> dict:
    return frames.extract_frames(root / "index.json", root / out, root / f"{out}.json", FRAMES, 6.0,
                                 executor=executor)


def run_flow(root: Path, frames_dir: str, out: str, executor: ExecutorConfig | None = None) -> dict:
    resample_videos(root / "index.json", root / frames_dir, root / "resample.json", root / "sheet.png",
                    ResampleConfig(fps=6), CLIP.frames)
    return flow.extract_flow(root / "index.json", root / frames_dir, root / "resample.json", root / out,
                             root / f"{out}.json", FLOW, CLIP, executor=executor)


def test_frames_and_flow_on_ray_write_the_bytes_of_a_local_run(cluster, dataset):
    local = run_frames(dataset, "frames")
    remote = run_frames(dataset, "frames-ray", on(cluster, videos_per_task=2))
    assert (local["computed"], remote["computed"], remote["counts"]["failed"]) == (6, 6, 1)
    assert digest(dataset / "frames-ray") == digest(dataset / "frames")  # parts and meta.json
    assert (dataset / "frames-ray.json").read_bytes() == (dataset / "frames.json").read_bytes()

    run_flow(dataset, "frames", "flow")
    report = run_flow(dataset, "frames-ray", "flow-ray", on(cluster))
    assert report["computed"] == 5 and report["workers"] == "ray" and report["counts"]["failed"] == 0
    assert digest(dataset / "flow-ray") == digest(dataset / "flow")
    assert (dataset / "flow-ray.json").read_bytes() == (dataset / "flow.json").read_bytes()
    # everything reused: no task runs, so no cluster is needed (this address has none)
    again = run_flow(dataset, "frames-ray", "flow-ray", on(f"127.0.0.1:{free_port()}"))
    assert (again["computed"], again["reused"]) == (0, 5)


def die_before_rename(marker: str, fn, batch):
    """On the first call (``marker`` absent): SIGKILL this worker once its part is written under the
    temporary name, before the rename; later calls run ``fn(batch)``."""
    if os.path.exists(marker):
        return fn(batch)
    Path(marker).write_text(str(os.getpid()))
    with mock.patch.object(parts.os, "replace", lambda *_: os.kill(os.getpid(), signal.SIGKILL)):
        return fn(batch)


@pytest.fixture
def by_value():
    """Ray workers get this module's functions by value (the tests folder is not importable there)."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_a_killed_task_is_retried_and_the_bytes_are_the_same(cluster, dataset, monkeypatch, by_value):
    run_frames(dataset, "frames")
    marker = dataset / "killed-once"
    monkeypatch.setattr(frames, "store_video_parts", partial(die_before_rename, str(marker), frames.store_video_parts))
    report = run_frames(dataset, "frames-ray", on(cluster))
    killed = int(marker.read_text())
    assert killed != os.getpid() and report["computed"] == 6  # a worker died and its task ran again
    assert digest(dataset / "frames-ray") == digest(dataset / "frames")  # its temporary file is gone too
    assert (dataset / "frames-ray.json").read_bytes() == (dataset / "frames.json").read_bytes()

    marker.unlink()  # no retries left: an error naming the video, not a hang or a silent loss
    with pytest.raises(WorkerDied, match=r"worker died 1 time \(executor.max_retries = 0\) running video \d "
                                         r"\(\S+/videos/v\d.mkv\)"):
        run_frames(dataset, "frames-ray2", on(cluster, max_retries=0))


def test_a_node_that_cannot_read_the_inputs_is_an_error_naming_the_path(cluster, dataset, monkeypatch):
    # /proc/self/cwd/... is the same file to every process with that working directory: here the
    # dataset folder, on the cluster's workers an empty one (a node without the shared mount)
    if not Path("/proc/self/cwd").is_dir():
        pytest.skip("needs /proc/self/cwd")
    index = json.loads((dataset / "index.json").read_text())
    for record in index:
        record["path"] = f"/proc/self/cwd/{Path(record['path']).relative_to(dataset).as_posix()}"
    (dataset / "index.json").write_text(json.dumps(index))
    monkeypatch.chdir(dataset)
    assert run_frames(dataset, "frames")["counts"]["stored"] == 5  # locally the paths work
    with pytest.raises(ClusterError, match=r"^node \S+ cannot read /proc/self/cwd/videos/v0.mkv, which the "
                                           r"driver can: every node must see the videos"):
        run_frames(dataset, "frames-ray", on(cluster))
    # the flow stage's input is the frames store, here at a path the workers do not have either
    resample_videos("index.json", "frames", "resample.json", "sheet.png", ResampleConfig(fps=6), CLIP.frames)
    with pytest.raises(ClusterError, match="cannot read /proc/self/cwd/frames/meta.json, which the driver can"):
        flow.extract_flow("index.json", "/proc/self/cwd/frames", "resample.json", "flow", "flow.json", FLOW, CLIP,
                          executor=on(cluster))


def test_a_node_computing_another_version_is_an_error_naming_the_module(cluster, dataset):
    jobs, _ = frames.plan_parts(json.loads((dataset / "index.json").read_text()), dataset / "out", FRAMES, 6.0)
    other = frames.VERSION + 1  # what the driver would expect after a bump the node has not got
    with pytest.raises(ClusterError, match=rf"computes version {frames.VERSION} of twostream.ingest.frames, the driver "
                                           rf"version {other}: install the same twostream commit on every node"):
        list(executors.ray_map(frames.store_video_parts, jobs[:1], on(cluster), expect={"twostream.ingest.frames": other}))
    assert not (dataset / "out").exists()  # checked before the first video


def test_the_local_path_never_imports_ray(dataset):
    probe = ("import sys, runpy; import twostream, twostream.ingest.frames, twostream.motion.flow, twostream.runtime.executors; "
             "from twostream.runtime.config import FramesConfig; from twostream.ingest.frames import extract_frames; "
             f"extract_frames({str(dataset / 'index.json')!r}, {str(dataset / 'f')!r}, {str(dataset / 'r.json')!r}, "
             f"FramesConfig(**{dataclasses.asdict(FRAMES)!r}), 6.0); "
             "assert 'ray' not in sys.modules, 'ray was imported'")
    subprocess.run([sys.executable, "-c", probe], cwd=REPO, check=True)
    assert (dataset / "f" / "meta.json").is_file()


def test_ray_benchmark_times_one_and_two_workers_on_the_same_bytes(capsys):
    from twostream.bench.__main__ import main

    main(["ray", "--videos", "2", "--seconds", "1", "--repeats", "1", "--params", str(REPO / "params.yaml")])
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert (result["bench"], result["size"], result["videos"], result["identical"]) == ("ray", "340x256", 2, True)
    assert result["pairs"] > 0 and sorted(result["pairs_per_s"]) == ["local_1", "local_2", "ray_1", "ray_2"]
    rates = result["pairs_per_s"]
    assert result["ratio"] == pytest.approx(rates["ray_2"] / rates["ray_1"], rel=0.01)
