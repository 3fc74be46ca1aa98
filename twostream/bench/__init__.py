"""Benchmarks of the pipeline's stages against their own limits, measured side by side.

``python -m twostream.bench <command> [options]`` prints ONE JSON line whose ``ratio`` is
the headline. Commands, and the module that documents each:

- ``decode``, ``store`` (``frames``): the frames stage vs plain ffmpeg decodes; frame
  codecs (size, decode speed, grey-level and TV-L1 errors).
- ``flow`` (``flow``): the flow stage's process pool vs one-thread OpenCV TV-L1;
  ``flow --backend torch`` (``tvl1``): the torch TV-L1 backend vs OpenCV on every core.
- ``loader``, ``train`` (``train``): the shard loader per core (and vs training steps);
  the train loop vs the same model on batches already in memory.
- ``memory`` (``memory``): peak RSS of decoding a long clip whole, in blocks, and through
  the frames stage's per-video unit.
- ``scale`` (``scale``): the data stages through DVC on an HMDB-shaped sample at 340x256:
  time, memory and bytes per decoded frame per stage, extrapolated to HMDB-51 and Kinetics-400.
- ``ray`` (``cluster``): the flow stage on local Ray clusters of 1 and 2 CPUs (and the local
  pool), at 340x256, outputs checked byte-identical.

``common`` holds what they share; the command line is in ``__main__``.
"""
