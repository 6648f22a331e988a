"""The ``convforge`` command."""

from __future__ import annotations

import argparse
import sys


def _cmd_demo(args) -> int:
    from .chapter import print_walkthrough

    print("convforge demo: the convolution chapter, computed by convforge")
    print_walkthrough()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convforge", description="Convolutions you can see and trust.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="walk through the convolution chapter",
        description="Print the chapter's results (corr2d, edges, learning a kernel, "
                    "padding/stride shapes, channels, 1x1 convolution).",
        epilog="example: convforge demo")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError) as exc:
        print(f"convforge {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
