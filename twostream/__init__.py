"""twostream: two-stream (appearance + motion) action recognition as a DVC pipeline."""

__version__ = "0.1.0"
