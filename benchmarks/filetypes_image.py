"""Image benchmark: the image handler's normalisation of a 12-megapixel JPEG against libvips.

Run from the repository root::

    .venv/bin/python benchmarks/filetypes_image.py [--repeat 7] [--quality 90]

The test photo is 4032 x 3024 (a phone camera's 12 MP) of photo-like content: smooth colour
gradients, soft shapes and sensor-like noise, saved by Pillow at JPEG quality 90.

(a) careshare: ``careshare_process`` of the image handler on the staged file, exactly as ingest
    calls it (re-identify, open with the one decoder, pixel cap, decode with draft, orientation,
    sRGB, 4096 long-edge cap, shareable JPEG and 320 px thumbnail written to a work directory);
(b) libvips: ``pyvips.Image.thumbnail_buffer`` twice (4096 never enlarging, then 320) with each
    result saved as the handler saves its JPEGs (same quality, progressive, optimised Huffman
    tables, no metadata) and written to the same kind of directory;
(c) the ratio (a) / (b). Medians of ``--repeat`` runs after one warm-up each; the order of (a)
    and (b) alternates. The target is a ratio of at most 1.3.

pyvips is not a careshare dependency: install it only to run this (``.venv/bin/pip install
"pyvips[binary]"``). Without it the libvips side is skipped with a note.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from careshare.core.models import Source
from careshare.core.policy import Policy
from careshare.plugins.filetypes import image as handler

__all__ = ["main", "make_photo"]

WIDTH, HEIGHT = 4032, 3024


def make_photo(quality: int = 90, seed: int = 12, size: tuple[int, int] = (WIDTH, HEIGHT)) -> bytes:
    """A JPEG (12 MP by default) that compresses like a photo: gradients, soft blobs and noise (not flat colour)."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    x /= width
    y /= height
    red = 170 * x + 60 * np.sin(6 * y)
    green = 140 * y + 50 * np.cos(5 * x + 2 * y)
    blue = 120 * (1 - x) * y + 60
    for _ in range(12):  # soft shapes, like out-of-focus objects
        cx, cy, r = rng.random(), rng.random(), rng.uniform(0.03, 0.2)
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r)) * rng.uniform(-90, 90)
        red += blob
        green += blob * rng.uniform(0.3, 1.2)
        blue += blob * rng.uniform(0.3, 1.2)
    pixels = np.stack([red, green, blue], axis=-1)
    pixels += rng.normal(0, 9, pixels.shape).astype(np.float32)  # sensor noise
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def run_careshare(path: Path, data: bytes, policy: Policy) -> float:
    with tempfile.TemporaryDirectory() as workdir:
        source = Source(
            path=path,
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            kind="image",
            media_type="image/jpeg",
            workdir=Path(workdir),
        )
        started = time.perf_counter()
        processed = handler.careshare_process(source=source, kind="image", policy=policy)
        elapsed = time.perf_counter() - started
        assert processed is not None and len(processed.renditions) == 2
    return elapsed


def run_libvips(pyvips: Any, data: bytes, policy: Policy) -> float:
    options = {"Q": policy.jpeg_quality, "optimize_coding": True, "interlace": True, "keep": "none"}
    with tempfile.TemporaryDirectory() as workdir:
        started = time.perf_counter()
        shareable = pyvips.Image.thumbnail_buffer(data, policy.max_long_edge, size="down")
        Path(workdir, "shareable.jpg").write_bytes(shareable.jpegsave_buffer(**options))
        thumbnail = pyvips.Image.thumbnail_buffer(data, policy.thumbnail_size, size="down")
        Path(workdir, "thumbnail.jpg").write_bytes(thumbnail.jpegsave_buffer(**options))
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the test photo")
    args = parser.parse_args(argv)
    try:
        import pyvips
    except (ImportError, OSError):
        pyvips = None
        print("note: pyvips is not installed (or libvips is missing): the libvips side is skipped.")
        print('      install it for this benchmark only: .venv/bin/pip install "pyvips[binary]"')

    policy = Policy()
    data = make_photo(args.quality)
    print(f"photo: {WIDTH}x{HEIGHT} JPEG q{args.quality}, {len(data) / 1e6:.1f} MB; cpus: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "photo.jpg")
        path.write_bytes(data)
        ours: list[float] = []
        theirs: list[float] = []
        run_careshare(path, data, policy)  # warm-up: imports, allocator, page cache
        if pyvips is not None:
            run_libvips(pyvips, data, policy)
        for index in range(args.repeat):
            order = ["careshare", "libvips"] if index % 2 == 0 else ["libvips", "careshare"]
            for side in order:
                if side == "careshare":
                    ours.append(run_careshare(path, data, policy))
                elif pyvips is not None:
                    theirs.append(run_libvips(pyvips, data, policy))

    results = {"careshare_s": statistics.median(ours)}
    print(f"careshare image handler: {results['careshare_s'] * 1000:8.1f} ms (median of {len(ours)})")
    if theirs:
        results["libvips_s"] = statistics.median(theirs)
        results["ratio"] = results["careshare_s"] / results["libvips_s"]
        version = f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}"  # type: ignore[union-attr]
        print(f"libvips {version} thumbnail_buffer: {results['libvips_s'] * 1000:8.1f} ms (median of {len(theirs)})")
        print(f"ratio careshare / libvips: {results['ratio']:.2f} (target <= 1.3)")
    return results


if __name__ == "__main__":
    main()
