"""Phase 4, from samples to trained networks: the datasets over the shards (``dataset``) and the
paired samples of fusion inside the network (``pairs``), their transforms (``transforms``), the
stream networks (``models``) and the fused one (``convfusion``), the training loop with its
checkpoints, resume and DDP (``engine``), running a network over samples (``scoring``), and
video-level accuracy (``metrics``). Imports ``samples`` and the phases before it only."""
