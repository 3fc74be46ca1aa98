"""Command line: ``python -m twostream predict VIDEO [--top K] [--json] [--models DIR] [--params FILE]``
and ``python -m twostream preset [NAME] [--list]``.

``predict`` prints the top-K actions of a video with their fused probabilities (``--json``:
one JSON object). A video that cannot be decoded or is too short, or a missing or mismatched
model, gives one line on stderr and exit status 1; bad arguments exit 2.
``preset NAME`` prints the ``-S key=value`` arguments of a preset of ``presets.yaml`` for
``dvc exp run``; ``--list`` (or no name) lists the presets.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from twostream.ingest.video import VideoError


def parser() -> argparse.ArgumentParser:
    """The ``twostream`` argument parser (sub-commands ``predict`` and ``preset``)."""
    top = argparse.ArgumentParser(prog="python -m twostream", description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True)
    p = commands.add_parser("predict", help="top-K actions of a video file")
    p.add_argument("video", help="a video file ffmpeg can decode (avi, mp4, ...)")
    p.add_argument("--top", type=int, default=5, metavar="K", help="how many classes to print (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--models", default="models", help="folder of spatial.pt, temporal.pt, fusion.pt")
    p.add_argument("--params", default="params.yaml", help="params.yaml the models were made with")
    s = commands.add_parser("preset", help="-S arguments of a recipe for dvc exp run (presets.yaml)")
    s.add_argument("name", nargs="?", help="the preset; without it, the list")
    s.add_argument("--list", action="store_true", help="list the presets: what each does, expects and needs")
    s.add_argument("--file", default="presets.yaml", help="the presets file (default presets.yaml)")
    return top


def preset_command(args: argparse.Namespace) -> int:
    """Run ``preset``; returns the exit status."""
    from twostream.runtime.presets import PresetError, main

    try:
        print(main(args.name, args.list, args.file), end="")
    except (PresetError, FileNotFoundError) as e:
        print(f"preset: error: {e}", file=sys.stderr)
        return 1
    return 0


def predict_command(args: argparse.Namespace) -> int:
    """Run ``predict``; returns the exit status."""
    from twostream.evaluate.predict import PredictError, predict_video  # torch loads only when needed

    if args.top < 1:
        print(f"predict: error: --top must be >= 1; got {args.top}", file=sys.stderr)
        return 2
    try:
        result = predict_video(args.video, args.models, args.params)
    except (VideoError, PredictError, FileNotFoundError, ValueError, KeyError, TypeError) as e:
        message = " ".join(str(e).split())  # one line, whatever the message holds
        print(f"predict: error: {message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.to_json(args.top)))
        return 0
    print(f"{result.video}: {result.clips} clips, {result.method} fusion")
    width = max(len(name) for name, _ in result.top(args.top))
    for rank, (name, prob) in enumerate(result.top(args.top), 1):
        print(f"{rank:>3}. {name:<{width}}  {prob:.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m twostream``."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return preset_command(args) if args.command == "preset" else predict_command(args)


if __name__ == "__main__":
    sys.exit(main())
