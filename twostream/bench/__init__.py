"""Benchmarks of the pipeline's stages against their own lower limits.

``python -m twostream.bench <command> [options]`` prints ONE JSON line. Commands:

- ``decode``: frames/s of the ``frames`` stage (``extract_frames``, all cores, into a
  temp dir) and of plain ``ffmpeg ... -f null -`` decodes of the same files with as many
  concurrent ffmpeg processes (scaled to the same working size and rgb24, and unscaled),
  medians over repeats; ``ratio`` = stage / scaled limit.
- ``store``: size and random-read speed of the frame storage candidates (gzip / lzf /
  raw uint8 chunks, JPEG / PNG bytes) on the same decoded frames.
- ``flow``: TV-L1 pairs/s of the ``flow`` stage (``extract_flow``, its process pool,
  params.yaml's ``flow``) and of plain OpenCV TV-L1 on the same frame pairs in one
  process, with one thread and with OpenCV's default threads; medians over repeats;
  ``ratio`` = stage / one thread. Frames come from ``--data`` (``data/frames``) or from
  demo videos rendered into a temp dir.
- ``loader``: samples/s that ``ShardDataset`` (train preset) delivers through a shuffling
  ``DataLoader`` with one worker per core, and samples/s of training steps of the demo
  model (ResNet-18 of ``twostream.models``, forward + backward + AdamW) on batches of it
  held in memory; ``ratio`` = loader / train (goal >= 3). Shards come from ``--shards``
  (``data/shards``) or a small synthetic set written to a temp dir.
- ``train``: training samples/s of the ``train`` stage's own loop (``engine.train_one_epoch``
  on ``engine.train_loader``: shard reads, transforms and DataLoader included, params.yaml's
  ``model``, ``train``, ``base.seed``) and of the same loop over random batches already in
  memory (the limit), interleaved, medians over repeats; ``ratio`` = real / limit (goal >= 0.85).

Videos come from ``--root``: a folder searched for video files, or an ``index.json``;
when it does not exist a small demo-like set is rendered with ``write_video``.

Modules: ``common`` (videos and ``frames`` params the benchmarks share), ``frames``
(``decode``, ``store``), ``flow`` (``flow``), ``train`` (``loader``, ``train``); the
command line is in ``__main__``.
"""
