"""Command line: ``python -m twostream predict VIDEO [--top K] [--json] [--models DIR] [--params FILE]``.

Prints the top-K actions of a video with their fused probabilities (``--json``: one JSON
object). A video that cannot be decoded or is too short, or a missing or mismatched
model, gives one line on stderr and exit status 1; bad arguments exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from twostream.video import VideoError


def parser() -> argparse.ArgumentParser:
    """The ``twostream`` argument parser (one sub-command: ``predict``)."""
    top = argparse.ArgumentParser(prog="python -m twostream", description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True)
    p = commands.add_parser("predict", help="top-K actions of a video file")
    p.add_argument("video", help="a video file ffmpeg can decode (avi, mp4, ...)")
    p.add_argument("--top", type=int, default=5, metavar="K", help="how many classes to print (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--models", default="models", help="folder of spatial.pt, temporal.pt, fusion.pt")
    p.add_argument("--params", default="params.yaml", help="params.yaml the models were made with")
    return top


def predict_command(args: argparse.Namespace) -> int:
    """Run ``predict``; returns the exit status."""
    from twostream.predict import PredictError, predict_video  # torch loads only when needed

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
    return predict_command(args)


if __name__ == "__main__":
    sys.exit(main())
