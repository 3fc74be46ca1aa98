"""Phase 5, from trained networks to results: scoring val and test through the test-time views
(``evaluation``, the ``score`` stage), fusing the streams (``fusion``, the ``fuse`` stage; with
``fusion: conv`` the fused network's training and scoring, ``convtrain``), and the top actions of
a new video (``predict``); a stream trained then scored in one call for tests and benchmarks
(``trainscore``). The last phase: nothing imports it but the command line and the
benchmarks."""
