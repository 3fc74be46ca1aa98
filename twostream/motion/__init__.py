"""Phase 2, from frames to motion: TV-L1 optical flow in OpenCV and PyTorch (``opticalflow``,
``tvl1``), the flow store made by the ``flow`` stage (``flow``) and read back with its
quantisation (``flowstore``), SG3I images (``sg3i`` makes the stage's index of frames,
``sg3istore`` reads images), and flow as colour pictures (``flowviz``). Imports ``ingest`` and
``runtime`` only."""
