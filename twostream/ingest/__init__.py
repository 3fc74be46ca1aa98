"""Phase 1, from video files to frames: the dataset formats that become ``data/index.json``
(``datasets``), the bundled demo dataset (``demo``, ``demoset``, ``figure``), reading and writing
videos with ffmpeg (``video``, ``videowriter``), which frames a clip uses (``clips``), and the
frames store: its per-video part files (``parts``, ``h5store``, ``codec``), how it is made
(``frames``) and read (``framestore``), and the resampled frame numbers (``resample``)."""
