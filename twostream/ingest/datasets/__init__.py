"""Dataset formats: one module per way a dataset root can be laid out, all behind one interface.

``index.build_index`` turns a root into the pipeline's index (``{"key", "path", "class",
"label", "role", "sha256"}`` records, role ``train``, ``val``, ``test`` or ``unused``) and a
report of everything met on the way; the format is named by ``data.format`` or recognised
(``auto``). Each format module (``hmdb51``, ``ucf101``, ``folders``, ``videolist``) only reads
its split or list files and says which video has which class and role; what they share (val
carving, problem lists, content hashes, the report) lives in ``common``.
"""
