"""Stage ``demo_data``: render the bundled synthetic HMDB-format dataset.

Usage: ``python stages/demo_data.py OUT_DIR`` (dvc.yaml: ``data/demo``, a persist output).
Reads ``params.yaml`` sections ``demo_data``, ``base`` (seed) and ``data`` (only ``root``).
When ``data.root`` points somewhere else (a real dataset), only a placeholder
``README.txt`` is written, so the stage costs nothing. A folder that already holds the
demo of these params and ``demoset.VERSION``, every file untouched (``demoset.holds``), is kept
as it is: an edit of the code that keeps the version renders nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from twostream.runtime.config import BaseConfig, DataConfig, DemoConfig, load_params, section, stage_main
from twostream.ingest.demoset import holds, render_dataset, stamp, write_stamp

PLACEHOLDER = (
    "The synthetic demo dataset was not rendered here: params.yaml data.root is {root!r},\n"
    "so the pipeline reads that dataset instead. Set data.root to {out!r} to render the demo.\n"
)


def _fresh_dir(out: Path) -> None:
    """Delete and recreate ``out``, refusing the working directory or any of its parents."""
    if out.resolve() in (Path.cwd().resolve(), *Path.cwd().resolve().parents):
        raise SystemExit(f"demo_data: refusing to delete {out} (the working directory or a parent of it)")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python stages/demo_data.py OUT_DIR")
    out = Path(argv[0])
    params = load_params()
    cfg = section(params, "demo_data", DemoConfig)
    seed = section(params, "base", BaseConfig).seed
    root = section(params, "data", DataConfig).root
    if Path(root).resolve() != out.resolve():
        _fresh_dir(out)
        (out / "README.txt").write_text(PLACEHOLDER.format(root=root, out=str(out)), encoding="utf-8")
        print(f"demo_data: data.root is {root!r}, not {str(out)!r}; wrote only {out / 'README.txt'}")
        return
    key = stamp(cfg, seed)
    if holds(out, key):
        print(f"demo_data: {out} already holds this demo (params, seed and version unchanged): nothing rendered")
        return
    _fresh_dir(out)
    summary = render_dataset(out, cfg, seed)
    write_stamp(out, key)
    print(f"demo_data: {summary['videos']} videos ({len(summary['classes'])} classes x "
          f"{summary['videos_per_class']}) in {summary['seconds']:.1f} s with {summary['workers']} workers -> {out}")


if __name__ == "__main__":
    stage_main("demo_data", main)
