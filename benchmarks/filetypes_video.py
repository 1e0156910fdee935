"""Video benchmark: the handler's probe + poster against bare PyAV open + seek + decode one frame.

Run from the repository root::

    .venv/bin/python benchmarks/filetypes_video.py [--repeat 9] [--seconds 60] [--keep DIR]

Writes, once per run, a 1920x1080 30 fps H.264 MP4 of ``--seconds`` seconds with PyAV's own
FFmpeg (libx264 ``superfast``: CABAC and B-frames, as phones write; mpeg4 if this PyAV has no
libx264, which the output says), in two layouts:

- ``phone GOP``: a keyframe every 2 s (phones write one every 1-2 s);
- ``long GOP``: libx264's default keyframe interval (250 frames, 8.3 s), so the keyframe before
  the 10 % point is the first frame and the handler decodes forward to the 10 % point.

Then, for each file, alternating the order, it times (median of ``--repeat`` runs):

(a) bare PyAV: ``av.open(path)``, seek the video stream to 10 % of the duration, decode one frame;
(b) the handler's probe + poster frame: ``open_media`` (format forced, no nested opens), ``probe``
    (streams, caps, duration, rate) and ``poster_frame`` (seek, decode, blank check);
(c) both again including the poster JPEG: the frame to an RGB image and ``save_jpeg`` at the
    policy's quality, the same Pillow call for both.

Prints the times and the ratio handler / bare; the target is <= 1.2x.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from careshare.core.policy import Policy
from careshare.plugins.filetypes import video
from careshare.plugins.filetypes.imaging import save_jpeg

TARGET_RATIO = 1.2
WIDTH, HEIGHT, FPS = 1920, 1080, 30


def h264_encoder() -> str:
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _scene(width: int) -> np.ndarray:
    """A wide still scene (gradients, blotches, sharp edges) that the camera pans across."""
    rng = np.random.default_rng(7)
    ys, xs = np.mgrid[0:HEIGHT, 0:width]
    blotches = rng.integers(0, 48, size=(HEIGHT // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    blotches = blotches.repeat(16, axis=0).repeat(16, axis=1)[:HEIGHT, :width]
    scene = np.empty((HEIGHT, width, 3), dtype=np.uint8)
    scene[..., 0] = (xs // 3) % 200
    scene[..., 1] = (ys // 2) % 200
    scene[..., 2] = ((xs // 40 + ys // 40) % 2) * 120  # a checkerboard: sharp edges
    scene += blotches
    scene += rng.integers(0, 16, size=scene.shape, dtype=np.uint8)  # sensor noise
    return scene


def write_test_video(path: Path, seconds: int, keyint: int | None) -> None:
    """A 1080p pan across a textured scene: frames cost about what camera frames cost to decode."""
    frames = seconds * FPS
    step = 2
    scene = _scene(WIDTH + frames * step)
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream(h264_encoder(), rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        if stream.codec_context.name == "libx264":
            options = {"preset": "superfast", "crf": "20"}
            if keyint:
                options["x264-params"] = f"keyint={keyint}:min-keyint={keyint}"
            stream.codec_context.options = options
        elif keyint:
            stream.codec_context.gop_size = keyint
        for index in range(frames):
            picture = np.ascontiguousarray(scene[:, index * step : index * step + WIDTH])
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def bare(path: Path, jpeg: Path | None) -> None:
    with av.open(str(path)) as media:
        stream = media.streams.video[0]
        target = media.duration / av.time_base * video.POSTER_AT
        media.seek(int(target / stream.time_base), stream=stream)
        frame = next(media.decode(stream))
        if jpeg is not None:
            save_jpeg(frame.to_image(), jpeg, role="poster", quality=Policy().jpeg_quality)


def handler(path: Path, jpeg: Path | None) -> None:
    policy = Policy()
    with video.open_media(path, "mov") as media:
        found = video.probe(media, policy)
        frame = video.poster_frame(media, found)
        if jpeg is not None:
            save_jpeg(frame.to_image(), jpeg, role="poster", quality=policy.jpeg_quality)


def measure(path: Path, repeat: int, jpeg: Path | None) -> tuple[float, float]:
    bare_run, handler_run = (lambda: bare(path, jpeg)), (lambda: handler(path, jpeg))
    bare_run(), handler_run()  # warm the page cache and the codecs
    bare_times, handler_times = [], []
    for index in range(repeat):
        order = [(bare_run, bare_times), (handler_run, handler_times)]
        for run, times in order if index % 2 == 0 else reversed(order):
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
    return statistics.median(bare_times), statistics.median(handler_times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--keep", type=Path, help="write the test videos here and keep them")
    args = parser.parse_args(argv)

    encoder = h264_encoder()
    print(f"PyAV {av.__version__}, FFmpeg {av.ffmpeg_version_info}; encoder {encoder}")
    if encoder != "libx264":
        print("NOTE: this PyAV has no libx264: the test videos are MPEG-4 Part 2 (mpeg4), not H.264")
    with tempfile.TemporaryDirectory(prefix="careshare-bench-video-") as tmp:
        directory = args.keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        worst = 0.0
        for label, keyint in (("phone GOP (2 s)", 2 * FPS), ("long GOP (250 frames)", None)):
            path = directory / f"bench-{args.seconds}s-1080p-{'gop' + str(keyint) if keyint else 'default'}.mp4"
            if not path.exists():
                started = time.perf_counter()
                write_test_video(path, args.seconds, keyint)
                mbps = path.stat().st_size * 8 / args.seconds / 1e6
                print(
                    f"wrote {path.name}: {path.stat().st_size / 1e6:.1f} MB ({mbps:.1f} Mbit/s) in {time.perf_counter() - started:.0f} s"
                )
            for what, jpeg in (("probe + poster frame", None), ("probe + poster JPEG", directory / "poster.jpg")):
                base, ours = measure(path, args.repeat, jpeg)
                ratio = ours / base
                worst = max(worst, ratio) if keyint else worst
                print(
                    f"{label:22s} {what:21s} bare {base * 1000:7.1f} ms   handler {ours * 1000:7.1f} ms"
                    f"   ratio {ratio:.2f}x"
                )
        verdict = "meets" if worst <= TARGET_RATIO else "misses"
        print(f"phone-GOP worst ratio {worst:.2f}x {verdict} the target <= {TARGET_RATIO}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
