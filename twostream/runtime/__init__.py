"""The runtime every phase stands on: typed params (``config``, checked before any data is read),
byte-stable JSON files (``jsonio``), process pools for the per-video stages (``pools``) and their
Ray executor (``executors``), and the named recipes of ``presets.yaml`` (``presets``). Nothing here
imports a pipeline phase."""
