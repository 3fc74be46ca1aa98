"""Benchmarks of the pipeline's stages against their own limits, measured side by side.

``python -m twostream.bench <command> [options]`` prints ONE JSON line whose ``ratio`` is
the headline. Commands, and the module that documents each:

- ``decode``, ``store`` (``frames``): the frames stage vs plain ffmpeg decodes; frame
  storage candidates.
- ``flow`` (``flow``): the flow stage's process pool vs one-thread OpenCV TV-L1;
  ``flow --backend torch`` (``tvl1``): the torch TV-L1 backend vs OpenCV on every core.
- ``loader``, ``train`` (``train``): the shard loader vs training steps; the train loop
  vs the same model on batches already in memory.

``common`` holds what they share; the command line is in ``__main__``.
"""
