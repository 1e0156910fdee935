"""DICOM rendering benchmark: the careshare handler against a bare pydicom + NumPy + Pillow pipeline.

Run from the repository root::

    .venv/bin/python benchmarks/filetypes_dicom.py [--repeat 9]

Two files are generated with pydicom: a 512x512 CT (signed 16-bit, rescale -1024, soft-tissue
window) and a 2500x2500 radiograph (16 bits allocated, 12 stored, MONOCHROME1, a window). Both
pipelines do the same steps: read the file, modality LUT, window, 8 bits (MONOCHROME1 inverted),
the PNG shareable copy (compress level 6) and a 320 px JPEG thumbnail (quality 85, the same
writer settings). The handler runs in this process (no child process), so the figures compare
rendering work only. Medians of ``--repeat`` runs after one warm-up; target ratio <= 1.1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pydicom
from PIL import Image
from pydicom.pixels import apply_modality_lut

from careshare.core.models import Source
from careshare.core.policy import Policy
from careshare.plugins.filetypes import dicom
from careshare.testing.strategies.dicom import build_dataset, to_bytes

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["main"]


def _phantom(size: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth anatomy-like structure plus noise: compresses like a real image, unlike pure noise."""
    y, x = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    body = np.exp(-(((x / 0.8) ** 2 + (y / 0.6) ** 2) ** 3))
    organs = 0.3 * np.sin(6 * x) * np.cos(4 * y) + 0.2 * np.exp(-((x - 0.2) ** 2 + y**2) * 20)
    return body * (1 + organs) + rng.normal(0, 0.02, (size, size))


def make_ct(directory: Path) -> Path:
    rng = np.random.default_rng(1)
    hounsfield = (_phantom(512, rng) * 1100 - 1000).round().clip(-1024, 3071).astype("i2")
    ds = build_dataset(
        hounsfield + 1024,  # stored values; rescale intercept -1024 brings back HU
        signed=True,
        bits_stored=16,
        rescale=(1.0, -1024.0),
        window=(40.0, 400.0),
        Modality="CT",
    )
    path = directory / "ct-512.dcm"
    path.write_bytes(to_bytes(ds))
    return path


def make_radiograph(directory: Path) -> Path:
    rng = np.random.default_rng(2)
    values = (_phantom(2500, rng) * 3000 + 500).round().clip(0, 4095).astype("u2")
    ds = build_dataset(values, bits_stored=12, photometric="MONOCHROME1", window=(2000.0, 3000.0), Modality="DX")
    path = directory / "dx-2500.dcm"
    path.write_bytes(to_bytes(ds))
    return path


def handler(path: Path, workdir: Path) -> None:
    source = Source(path=path, sha256="", size=path.stat().st_size, kind="dicom", media_type="", workdir=workdir)
    dicom.careshare_process(source=source, kind="dicom", policy=Policy())


def bare(path: Path, workdir: Path) -> None:
    """What a careful engineer writes with the same libraries: no frame choice, no checks."""
    ds = pydicom.dcmread(path)
    values = apply_modality_lut(ds.pixel_array, ds)
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    unit = np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        unit = 1.0 - unit
    image = Image.fromarray(np.rint(unit * 255).astype(np.uint8), "L")
    image.save(workdir / "shareable.png", "PNG", compress_level=6)
    thumb = image.copy()
    thumb.thumbnail((320, 320), Image.Resampling.LANCZOS, reducing_gap=3.0)
    thumb.save(workdir / "thumbnail.jpg", "JPEG", quality=85, optimize=True, progressive=True)


def median_seconds(run: Callable[[Path, Path], None], path: Path, repeat: int) -> float:
    times = []
    for attempt in range(repeat + 1):
        with tempfile.TemporaryDirectory() as workdir:
            started = time.perf_counter()
            run(path, Path(workdir))
            if attempt:  # the first run warms caches and imports
                times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args(argv)
    print(f"pydicom {pydicom.__version__}, NumPy {np.__version__}, Python {sys.version.split()[0]}")
    print(f"{'file':<24}{'careshare':>12}{'bare':>12}{'ratio':>8}")
    with tempfile.TemporaryDirectory() as directory:
        for path in (make_ct(Path(directory)), make_radiograph(Path(directory))):
            ours = median_seconds(handler, path, args.repeat)
            theirs = median_seconds(bare, path, args.repeat)
            print(f"{path.name:<24}{ours * 1000:>10.1f}ms{theirs * 1000:>10.1f}ms{ours / theirs:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
