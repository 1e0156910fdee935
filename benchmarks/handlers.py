"""Handlers on large inputs (issue 9): each file-type handler against the bare library doing the same output.

Run from the repository root::

    .venv/bin/python benchmarks/handlers.py [pdf|video|dicom|image ...] [--size-mib 256] [--repeat 3]
        [--video-frames 450] [--video-keyint 1] [--dicom-edge 6144] [--photo-mp 48] [--pdf-old-options] [--dir DIR]

One large valid input per handler is generated in code, so that the real work grows with its size:

- pdf: one A4 page drawing an RGB image of about ``--size-mib`` MiB stored without a filter (as some
  scanners write it). The handler sanitises, saves the shareable copy and renders page 1; the bare
  side is ``pikepdf.open`` + ``save`` with the options the handler picks for this file, then the
  same pypdfium2 render of page 1 and the same Pillow thumbnail. ``--pdf-old-options`` also times,
  once, the save the handler did before issue 9 (linearized, every stream deflated).
- video: ``--video-frames`` frames of 1080p30 H.264 (libx264 with CABAC and B-frames, a keyframe
  every ``--video-keyint`` seconds, 1 by default, as phones write) of noisy pictures, so the file
  is large, plus AAC stereo sound. The bare side is a PyAV remux of the same tracks into MP4 with
  ``movflags=+faststart`` plus a poster: seek to 10 % of the duration, decode one frame, JPEG and
  a 320 px thumbnail. (When the only keyframe before 10 % is the first frame, as in a clip shorter
  than ten keyframe intervals, the handler decodes forward to the 10 % point: its poster rule.)
- dicom: one ``--dicom-edge`` square 16-bit radiograph (12 bits stored, MONOCHROME1, a window).
  The bare side is ``benchmarks/filetypes_dicom.py``'s: pydicom ``pixel_array``, modality LUT and
  window in NumPy, Pillow PNG and thumbnail.
- image: a ``--photo-mp`` megapixel photo-like JPEG (``benchmarks/filetypes_image.py``'s
  ``make_photo``). The bare side is Pillow: open, ``draft``, one resize to the 4096 px cap, JPEG,
  and the thumbnail from the resized picture, with the handler's writer settings.

Each handler's ``careshare_process`` is called directly, in this process, with a
``careshare.core.models.Source`` and the default ``Policy``. Every run writes into a fresh work
directory. After one warm-up run of each side, ``--repeat`` runs alternate the order; medians are
printed with the ratio handler / bare. The target is a ratio of at most 1.5 for every handler; the
exit status is 0 only when all of them meet it. Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np
import pikepdf
import pypdfium2
from PIL import Image

from careshare.core.models import Source
from careshare.core.policy import Policy
from careshare.plugins.filetypes import dicom, image, pdf, video
from careshare.testing.strategies.dicom import build_dataset, to_bytes

sys.path.insert(0, str(Path(__file__).resolve().parent))
import filetypes_dicom  # the other benchmarks' helpers, beside this file
import filetypes_image
import filetypes_video

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

__all__ = ["main"]

MiB = 1024 * 1024
TARGET_RATIO = 1.5
PARTS = ("pdf", "video", "dicom", "image")
WIDTH, HEIGHT, FPS = 1920, 1080, 30
POLICY = Policy()


# -- timing -----------------------------------------------------------------------------------------


def run_in(directory: Path, run: Callable[[Path], object]) -> float:
    """Seconds ``run`` takes with a fresh, empty work directory; the directory is removed afterwards."""
    workdir = Path(tempfile.mkdtemp(dir=directory, prefix="work-"))
    try:
        started = time.perf_counter()
        run(workdir)
        return time.perf_counter() - started
    finally:
        shutil.rmtree(workdir)


def compare(
    directory: Path, ours: Callable[[Path], object], bare: Callable[[Path], object], repeat: int
) -> tuple[float, float]:
    """Median seconds of the handler and of the bare library: one warm-up each, then alternating runs."""
    run_in(directory, ours), run_in(directory, bare)
    ours_times, bare_times = [], []
    for index in range(repeat):
        order = [(ours, ours_times), (bare, bare_times)]
        for run, times in order if index % 2 == 0 else reversed(order):
            times.append(run_in(directory, run))
    return statistics.median(ours_times), statistics.median(bare_times)


def handler_run(module: ModuleType, kind: str, path: Path) -> Callable[[Path], object]:
    def run(workdir: Path) -> None:
        source = Source(path=path, sha256="", size=path.stat().st_size, kind=kind, media_type="", workdir=workdir)
        processed = module.careshare_process(source=source, kind=kind, policy=POLICY)
        assert processed is not None and processed.renditions

    return run


def bare_thumbnail(picture: Image.Image, workdir: Path) -> None:
    """The 320 px JPEG thumbnail as the handlers write it: one Lanczos resize, progressive, optimised."""
    thumb = picture.copy()
    thumb.thumbnail((POLICY.thumbnail_size,) * 2, Image.Resampling.LANCZOS, reducing_gap=3.0)
    thumb.convert("RGB").save(
        workdir / "thumbnail.jpg", "JPEG", quality=POLICY.jpeg_quality, optimize=True, progressive=True
    )


# -- pdf --------------------------------------------------------------------------------------------


def write_scan_pdf(path: Path, size: int) -> None:
    """One A4 page drawing an A4-shaped RGB image of about ``size`` bytes, stored without a filter.

    Written straight to disk with an exact xref table (random pixels, so nothing compresses well).
    """
    width = round(math.sqrt(size / 3 / math.sqrt(2)))
    height = size // (3 * width)
    payload = 3 * width * height
    content = b"q 595 0 0 842 0 0 cm /Im0 Do Q"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /XObject << /Im0 5 0 R >> >>"
        b" /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
    ]
    head = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(head))
        head += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    image_at = len(head)
    image_head = (
        b"5 0 obj\n<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceRGB"
        b" /BitsPerComponent 8 /Length %d >>\nstream\n" % (width, height, payload)
    )
    image_end = b"\nendstream\nendobj\n"
    xref_at = image_at + len(image_head) + payload + len(image_end)
    xref = b"xref\n0 6\n0000000000 65535 f \n" + b"".join(b"%010d 00000 n \n" % o for o in [*offsets, image_at])
    trailer = b"trailer\n<< /Size 6 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref_at
    with path.open("wb") as handle:
        handle.write(head + image_head)
        left = payload
        while left:
            block = min(left, 4 * MiB)
            handle.write(os.urandom(block))
            left -= block
        handle.write(image_end + xref + trailer)


def pdf_save_options(path: Path) -> dict[str, object]:
    """The options the handler picks for the generated one-page file, by its own rules and limits."""
    size = path.stat().st_size
    return {
        "linearize": size <= pdf.LINEARIZE_ONE_PAGE_LIMIT,
        "encryption": False,
        "deterministic_id": True,
        "compress_streams": size <= pdf.DEFLATE_ON_SAVE_LIMIT,
        "stream_decode_level": pikepdf.StreamDecodeLevel.none,
    }


def bare_pdf(path: Path, options: dict[str, object]) -> Callable[[Path], object]:
    def run(workdir: Path) -> None:
        shareable = workdir / "shareable.pdf"
        with pikepdf.open(path) as document:
            document.save(shareable, **options)
        rendered = pypdfium2.PdfDocument(shareable)
        try:
            page = rendered[0]
            width, height = page.get_size()
            picture = page.render(scale=2 * POLICY.thumbnail_size / max(width, height)).to_pil()
            page.close()
        finally:
            rendered.close()
        bare_thumbnail(picture, workdir)

    return run


def bench_pdf(directory: Path, args: argparse.Namespace) -> tuple[str, float, float]:
    path = directory / "scan.pdf"
    started = time.perf_counter()
    write_scan_pdf(path, args.size_mib * MiB)
    size = path.stat().st_size
    print(f"pdf: wrote {size / MiB:.0f} MiB, one page, unfiltered RGB image, in {time.perf_counter() - started:.1f} s")
    options = pdf_save_options(path)
    print(f"pdf: save options {', '.join(f'{k}={v}' for k, v in options.items())}")
    ours, bare = compare(directory, handler_run(pdf, "pdf", path), bare_pdf(path, options), args.repeat)
    if args.pdf_old_options:
        old = {"linearize": True, "encryption": False, "deterministic_id": True}
        seconds = run_in(directory, bare_pdf(path, old))
        print(f"pdf: bare with the handler's options before issue 9 (linearize, deflate every stream): {seconds:.2f} s")
    return f"{size / MiB:.0f} MiB one-page scan", ours, bare


# -- video ------------------------------------------------------------------------------------------


def write_noisy_video(path: Path, frames: int, keyint: int) -> None:
    """1080p30 H.264 with CABAC and B-frames, a keyframe every ``keyint`` frames, noisy pictures; AAC stereo sound."""
    rng = np.random.default_rng(9)
    ramp = (np.mgrid[0:HEIGHT, 0:WIDTH][1] // 8 % 200).astype(np.uint8)[..., np.newaxis].repeat(3, axis=2)
    # Four noisy pictures in turn: x264's ultrafast preset references one frame back, so each costs bits.
    pictures = [
        av.VideoFrame.from_ndarray(ramp + rng.integers(0, 24, ramp.shape, dtype=np.uint8), format="rgb24").reformat(
            format="yuv420p"
        )
        for _ in range(4)
    ]
    encoder = filetypes_video.h264_encoder()
    with av.open(str(path), "w", format="mp4") as out:
        picture_track = out.add_stream(encoder, rate=FPS)
        picture_track.width, picture_track.height, picture_track.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        if encoder == "libx264":
            picture_track.codec_context.options = {
                "preset": "ultrafast",
                "crf": "23",
                "x264-params": f"keyint={keyint}:min-keyint={keyint}:bframes=3:cabac=1",
            }
        else:
            picture_track.codec_context.gop_size = keyint
        sound = out.add_stream("aac", rate=48000)
        sound.layout = "stereo"
        samples = 0
        for index in range(frames):
            picture = pictures[index % len(pictures)]
            picture.pts = index
            out.mux(picture_track.encode(picture))
            while samples < (index + 1) * 48000 // FPS:
                chunk = (rng.standard_normal((2, 1024)) * 0.05).astype(np.float32)
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                frame.sample_rate, frame.pts = 48000, samples
                out.mux(sound.encode(frame))
                samples += 1024
        out.mux(picture_track.encode(None))
        out.mux(sound.encode(None))


def bare_video(path: Path) -> Callable[[Path], object]:
    def run(workdir: Path) -> None:
        with av.open(str(path)) as media:
            tracks = [*media.streams.video, *media.streams.audio]
            options = {"movflags": "+faststart"}
            with av.open(str(workdir / "shareable.mp4"), "w", format="mp4", container_options=options) as out:
                copies = {track.index: out.add_stream_from_template(track) for track in tracks}
                for packet in media.demux(tracks):
                    if packet.dts is None:
                        continue  # the flush packet at the end of each track
                    packet.stream = copies[packet.stream.index]
                    out.mux(packet)
            track = media.streams.video[0]
            media.seek(int(media.duration / av.time_base * video.POSTER_AT / track.time_base), stream=track)
            poster = next(media.decode(track)).to_image()
        poster.save(workdir / "poster.jpg", "JPEG", quality=POLICY.jpeg_quality, optimize=True, progressive=True)
        bare_thumbnail(poster, workdir)

    return run


def bench_video(directory: Path, args: argparse.Namespace) -> tuple[str, float, float]:
    path = directory / "noisy.mp4"
    started = time.perf_counter()
    write_noisy_video(path, args.video_frames, round(args.video_keyint * FPS))
    size = path.stat().st_size
    print(
        f"video: wrote {size / MiB:.0f} MiB, {args.video_frames} frames 1080p30 {filetypes_video.h264_encoder()}"
        f" + AAC ({size * 8 / (args.video_frames / FPS) / 1e6:.0f} Mbit/s), a keyframe every {args.video_keyint:g} s,"
        f" in {time.perf_counter() - started:.1f} s"
    )
    ours, bare = compare(directory, handler_run(video, "video", path), bare_video(path), args.repeat)
    return f"{size / MiB:.0f} MiB {args.video_frames / FPS:.0f} s 1080p MP4", ours, bare


# -- dicom ------------------------------------------------------------------------------------------


def write_radiograph(path: Path, edge: int) -> None:
    values = (filetypes_dicom._phantom(edge, np.random.default_rng(2)) * 3000 + 500).round().clip(0, 4095)
    dataset = build_dataset(
        values.astype("u2"), bits_stored=12, photometric="MONOCHROME1", window=(2000.0, 3000.0), Modality="DX"
    )
    path.write_bytes(to_bytes(dataset))


def bench_dicom(directory: Path, args: argparse.Namespace) -> tuple[str, float, float]:
    path = directory / "radiograph.dcm"
    started = time.perf_counter()
    write_radiograph(path, args.dicom_edge)
    size = path.stat().st_size
    print(
        f"dicom: wrote {size / MiB:.0f} MiB, {args.dicom_edge}x{args.dicom_edge} 12-bit, in {time.perf_counter() - started:.1f} s"
    )
    ours, bare = compare(
        directory, handler_run(dicom, "dicom", path), lambda workdir: filetypes_dicom.bare(path, workdir), args.repeat
    )
    return f"{size / MiB:.0f} MiB {args.dicom_edge}x{args.dicom_edge} radiograph", ours, bare


# -- image ------------------------------------------------------------------------------------------


def photo_size(megapixels: float) -> tuple[int, int]:
    """A 4:3 picture of about ``megapixels`` million pixels, edges a multiple of 16 (as cameras make them)."""
    width = round(math.sqrt(megapixels * 1e6 * 4 / 3) / 16) * 16
    return width, width * 3 // 4


def bare_image(path: Path) -> Callable[[Path], object]:
    def run(workdir: Path) -> None:
        with Image.open(path) as photo:
            scale = min(1.0, POLICY.max_long_edge / max(photo.size))
            target = (round(photo.width * scale), round(photo.height * scale))
            photo.draft("RGB", target)
            shareable = (
                photo.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0) if target != photo.size else photo
            )
            shareable.save(
                workdir / "shareable.jpg", "JPEG", quality=POLICY.jpeg_quality, optimize=True, progressive=True
            )
            bare_thumbnail(shareable, workdir)

    return run


def bench_image(directory: Path, args: argparse.Namespace) -> tuple[str, float, float]:
    path = directory / "photo.jpg"
    size = photo_size(args.photo_mp)
    started = time.perf_counter()
    path.write_bytes(filetypes_image.make_photo(size=size))
    print(
        f"image: wrote {path.stat().st_size / MiB:.0f} MiB, {size[0]}x{size[1]} JPEG q90,"
        f" in {time.perf_counter() - started:.1f} s"
    )
    ours, bare = compare(directory, handler_run(image, "image", path), bare_image(path), args.repeat)
    return f"{size[0] * size[1] / 1e6:.0f} MP JPEG ({size[0]}x{size[1]})", ours, bare


BENCHES = {"pdf": bench_pdf, "video": bench_video, "dicom": bench_dicom, "image": bench_image}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", nargs="*", metavar="part", help="pdf, video, dicom or image (default: all four)")
    parser.add_argument("--size-mib", type=int, default=256, help="size of the PDF in MiB (default 256)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each side; medians (default 3)")
    parser.add_argument("--video-frames", type=int, default=450, help="frames of the 30 fps video (default 450)")
    parser.add_argument(
        "--video-keyint", type=float, default=1.0, help="seconds between the video's keyframes (default 1)"
    )
    parser.add_argument(
        "--dicom-edge", type=int, default=6144, help="rows and columns of the radiograph (default 6144)"
    )
    parser.add_argument("--photo-mp", type=float, default=48.0, help="megapixels of the photo (default 48)")
    parser.add_argument(
        "--pdf-old-options", action="store_true", help="also time the PDF save as it was before issue 9"
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="where the inputs and outputs go (default: the temp dir)"
    )
    args = parser.parse_args(argv)
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}: choose from {', '.join(PARTS)}")
    parts = args.parts or list(PARTS)
    print(
        f"pikepdf {pikepdf.__version__} (qpdf {pikepdf.__libqpdf_version__}), PyAV {av.__version__}"
        f" (FFmpeg {av.ffmpeg_version_info}), Pillow {Image.__version__}, NumPy {np.__version__}; cpus {os.cpu_count()}"
    )
    results = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="careshare-bench-handlers-") as tmp:
        for part in parts:
            results.append((part, *BENCHES[part](Path(tmp), args)))
            label, ours, bare = results[-1][1:]
            print(f"{part}: handler {ours:.2f} s, bare {bare:.2f} s, ratio {ours / bare:.2f}", flush=True)
    print(f"\n{'handler':<8}{'input':<36}{'handler':>10}{'bare':>10}{'ratio':>8}")
    for part, label, ours, bare in results:
        print(f"{part:<8}{label:<36}{ours:>9.2f}s{bare:>9.2f}s{ours / bare:>8.2f}")
    worst = max(ours / bare for _, _, ours, bare in results)
    print(f"worst ratio {worst:.2f} {'meets' if worst <= TARGET_RATIO else 'misses'} the target <= {TARGET_RATIO}")
    return 0 if worst <= TARGET_RATIO else 1


if __name__ == "__main__":
    raise SystemExit(main())
