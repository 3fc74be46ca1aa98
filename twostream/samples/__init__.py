"""Phase 3, from the stores to training samples: a clip's sample per modality as a reference into a
store, and the reader that turns a reference back into pixels (``refs``), the shards that list
every clip of every role (``shards``), which videos each role expects and why some have no
samples (``expected``), and the preview images (``previews``). Imports ``motion``, ``ingest`` and
``runtime`` only."""
