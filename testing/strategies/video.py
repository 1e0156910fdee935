"""Hypothesis strategies for small real videos written by PyAV (``careshare.testing.strategies.video``).

A :class:`VideoSpec` says what to write (container, codecs, size, frames, audio, where ``moov``
goes, metadata, leading black frames); :func:`make_video` writes it with PyAV's own FFmpeg, and
:func:`videos` draws specs and their bytes. Files stay tiny (tens of pixels, a dozen frames) so
property tests run hundreds of them in seconds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import av
import numpy as np
from hypothesis import strategies as st

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "AUDIO_CODECS",
    "CONTAINER_MEDIA_TYPES",
    "VIDEO_CODECS",
    "VideoSpec",
    "h264_encoder",
    "make_video",
    "video_specs",
    "videos",
    "write_video",
]

#: Media type of each container a spec can name.
CONTAINER_MEDIA_TYPES = {
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "webm": "video/webm",
    "matroska": "video/x-matroska",
    # Phone-camera containers (ISO base media like MP4): the video handler accepts them too.
    "3gp": "video/3gpp",
    "3g2": "video/3gpp2",
}
#: Video codecs each container holds in these strategies (``h264`` is libx264, or mpeg4 without it).
VIDEO_CODECS = {
    "mp4": ("h264",),
    "mov": ("h264",),
    "webm": ("vp9", "vp8"),
    "matroska": ("h264", "vp9"),
    "3gp": ("h264",),
    "3g2": ("h264",),
}
#: Audio codecs each container holds (None: no audio track).
AUDIO_CODECS: dict[str, tuple[str | None, ...]] = {
    "mp4": (None, "aac"),
    "mov": (None, "aac"),
    "webm": (None, "opus"),
    "matroska": (None, "aac", "opus"),
    "3gp": (None, "aac"),
    "3g2": (None, "aac"),
}
#: Containers of the ISO base media family: the moov atom may come first (faststart) or last.
ISO_MEDIA = frozenset({"mp4", "mov", "3gp", "3g2"})
_ENCODERS = {"vp9": "libvpx-vp9", "vp8": "libvpx", "aac": "aac", "opus": "libopus"}
_AUDIO_FRAME = {"aac": 1024, "opus": 960}
_SAMPLE_RATE = 48000


def h264_encoder() -> str:
    """libx264 when PyAV's FFmpeg has it (the PyPI wheels do), else mpeg4 (MPEG-4 Part 2)."""
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _encoder(codec: str) -> str:
    return h264_encoder() if codec == "h264" else _ENCODERS[codec]


@attrs.frozen
class VideoSpec:
    """What :func:`write_video` makes. Sizes are even (4:2:0 chroma needs it)."""

    container: str = "mp4"
    video_codec: str = "h264"
    width: int = 64
    height: int = 48
    frames: int = 8
    fps: int = 10
    audio_codec: str | None = None
    #: MP4/MOV only: FFmpeg's default layout (``mdat`` then ``moov``) when True, ``+faststart`` when False.
    moov_at_end: bool = True
    #: Keyframe interval in frames (None: the encoder's default).
    gop: int | None = None
    #: B-frames for libx264 (reordered frames: DTS differs from PTS).
    bframes: int = 0
    #: Frames at the start that are pure black (the poster must skip them).
    black_frames: int = 0
    #: Container metadata; for MOV, keys like ``com.apple.quicktime.location.ISO6709`` are written as
    #: QuickTime metadata (``use_metadata_tags``).
    metadata: Mapping[str, str] = attrs.field(factory=dict)
    #: Metadata of the video stream.
    stream_metadata: Mapping[str, str] = attrs.field(factory=dict)
    seed: int = 0

    @property
    def media_type(self) -> str:
        return CONTAINER_MEDIA_TYPES[self.container]

    @property
    def duration(self) -> float:
        return self.frames / self.fps


def _picture(spec: VideoSpec, index: int, rng: np.random.Generator) -> np.ndarray:
    if index < spec.black_frames:
        return np.zeros((spec.height, spec.width, 3), dtype=np.uint8)
    # A bright moving gradient with a little noise: clearly not blank, different in every frame.
    ys, xs = np.mgrid[0 : spec.height, 0 : spec.width]
    base = np.stack(
        [
            (xs * 255 // max(spec.width - 1, 1) + index * 7) % 256,
            (ys * 255 // max(spec.height - 1, 1) + index * 3) % 256,
            np.full_like(xs, 128 + (index * 11) % 128),
        ],
        axis=-1,
    )
    noise = rng.integers(0, 24, size=base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_video(spec: VideoSpec, path: Path) -> Path:
    """Write ``spec`` to ``path`` with PyAV; returns ``path``."""
    options: dict[str, str] = {}
    if spec.container in ISO_MEDIA:
        flags = [] if spec.moov_at_end else ["+faststart"]
        if spec.container == "mov" and any(k.startswith("com.") for k in spec.metadata):
            flags.append("+use_metadata_tags")
        if flags:
            options["movflags"] = "".join(flags)
    rng = np.random.default_rng(spec.seed)
    with av.open(str(path), "w", format=spec.container, container_options=options) as out:
        out.metadata.update(spec.metadata)
        video = out.add_stream(_encoder(spec.video_codec), rate=spec.fps)
        video.width, video.height, video.pix_fmt = spec.width, spec.height, "yuv420p"
        video.metadata.update(spec.stream_metadata)
        codec_options: dict[str, Any] = {}
        if video.codec_context.name == "libx264":
            codec_options = {"preset": "ultrafast", "bf": str(spec.bframes)}
        elif video.codec_context.name in ("libvpx", "libvpx-vp9"):
            codec_options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        if spec.gop is not None:
            video.codec_context.gop_size = spec.gop
            if video.codec_context.name == "libx264":
                codec_options["x264-params"] = f"keyint={spec.gop}:min-keyint={spec.gop}:scenecut=0"
        video.codec_context.options = codec_options
        audio = None
        if spec.audio_codec is not None:
            audio = out.add_stream(_encoder(spec.audio_codec), rate=_SAMPLE_RATE)
            audio.layout = "mono"
        for index in range(spec.frames):
            frame = av.VideoFrame.from_ndarray(_picture(spec, index, rng), format="rgb24")
            out.mux(video.encode(frame.reformat(format="yuv420p")))
        out.mux(video.encode(None))
        if audio is not None:
            assert spec.audio_codec is not None
            size = _AUDIO_FRAME[spec.audio_codec]
            total = int(spec.duration * _SAMPLE_RATE)
            for start in range(0, max(total, size), size):
                t = (np.arange(start, start + size) / _SAMPLE_RATE).astype(np.float32)
                samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32).reshape(1, -1)
                sound = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                sound.sample_rate = _SAMPLE_RATE
                sound.pts = start
                out.mux(audio.encode(sound))
            out.mux(audio.encode(None))
    return path


def make_video(spec: VideoSpec) -> bytes:
    """The bytes of ``spec`` written by :func:`write_video`."""
    suffix = {"matroska": ".mkv"}.get(spec.container, f".{spec.container}")
    with tempfile.TemporaryDirectory(prefix="careshare-video-") as tmp:
        path = write_video(spec, Path(tmp) / f"video{suffix}")
        return path.read_bytes()


@st.composite
def video_specs(
    draw: st.DrawFn,
    containers: tuple[str, ...] = ("mp4", "mov", "webm", "matroska"),
    max_side: int = 96,
    max_frames: int = 12,
    audio: bool | None = None,
) -> VideoSpec:
    """Small valid video specs: every container, its codecs, with or without audio, moov first or last.

    :param audio: True or False forces a sound track on or off; None draws it.
    """
    container = draw(st.sampled_from(containers))
    audio_choices = AUDIO_CODECS[container]
    if audio is True:
        audio_choices = tuple(c for c in audio_choices if c is not None)
    elif audio is False:
        audio_choices = (None,)
    even = st.integers(8, max_side // 2).map(lambda n: n * 2)
    video_codec = draw(st.sampled_from(VIDEO_CODECS[container]))
    return VideoSpec(
        container=container,
        video_codec=video_codec,
        width=draw(even),
        height=draw(even),
        frames=draw(st.integers(1, max_frames)),
        fps=draw(st.sampled_from((5, 10, 24, 25, 30))),
        audio_codec=draw(st.sampled_from(audio_choices)),
        moov_at_end=draw(st.booleans()),
        gop=draw(st.none() | st.integers(1, 6)),
        bframes=draw(st.integers(0, 2)) if video_codec == "h264" else 0,
        black_frames=draw(st.integers(0, 2)),
        seed=draw(st.integers(0, 2**16)),
    )


def videos(**kwargs: Any) -> st.SearchStrategy[tuple[VideoSpec, bytes]]:
    """Specs drawn by :func:`video_specs` (same keyword arguments) with their bytes."""
    return video_specs(**kwargs).map(lambda spec: (spec, make_video(spec)))
