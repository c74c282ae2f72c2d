"""``adaptkit-from-adapterhub SRC DST --base MODEL``: an AdapterHub folder as an adaptkit checkpoint.

Run as ``adaptkit-from-adapterhub`` or ``python -m adaptkit.convert``.
"""

from __future__ import annotations

import argparse
import sys

from .adapterhub import load_adapterhub
from .checkpoint import save_adapter
from .errors import AdapterError


def main(argv: list[str] | None = None) -> int:
    """Convert an AdapterHub folder into an adaptkit checkpoint (for ``adaptkit.load_adapter``)."""
    parser = argparse.ArgumentParser(prog="adaptkit-from-adapterhub", description=main.__doc__)
    parser.add_argument("source", help="a folder written by AdapterHub's save_adapter")
    parser.add_argument("destination", help="the adaptkit checkpoint folder to write")
    parser.add_argument("--base", required=True, help="the base model (folder or Hub id) the adapter was trained on")
    parser.add_argument("--no-head", action="store_true", help="leave AdapterHub's head out")
    args = parser.parse_args(argv)
    from transformers import AutoModel  # after parsing: --help needs no model code

    try:
        model = AutoModel.from_pretrained(args.base)
        name = load_adapterhub(model, args.source, load_head=not args.no_head)
        save_adapter(model, args.destination, name)
    except (AdapterError, OSError, ValueError) as exc:  # one line, no traceback
        print(f"{parser.prog}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"wrote adapter {name!r} to {args.destination}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
