"""twostream: two-stream (appearance + motion) action recognition as a DVC pipeline.

The package is laid out as the pipeline runs, each phase a sub-package that imports only the
ones before it: ``ingest`` (videos to frames), ``motion`` (frames to optical flow and SG3I),
``samples`` (the stores to training samples), ``learn`` (samples to trained networks) and
``evaluate`` (networks to scores, fusion and predictions), all on ``runtime`` (params, pools,
executors, presets). The stage scripts in ``stages/`` each call one function of them;
``python -m twostream`` predicts and prints presets, ``python -m twostream.bench`` measures.
"""

__version__ = "0.1.0"
