"""File-type benchmarks in one run: image vs libvips, DICOM vs bare pydicom, video vs bare PyAV.

Each part prints its own times and the ratio against a baseline measured in the same run:

    .venv/bin/python benchmarks/filetypes.py            # all three
    .venv/bin/python benchmarks/filetypes.py image      # one of image, dicom, video

libvips (the image baseline) is installed for benchmarking only: `.venv/bin/pip install "pyvips[binary]"`.
Figures measured on the project machine are in docs/performance.md.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

PARTS = ("image", "dicom", "video")


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    chosen = [part for part in argv if part in PARTS] or list(PARTS)
    for part in chosen:
        print(f"\n== {part} ==", flush=True)
        importlib.import_module(f"filetypes_{part}").main([])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
