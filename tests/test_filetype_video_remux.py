"""The video handler's streamable copy written once: ``moov`` in space kept for it, faststart as the fallback.

Files are written by PyAV's own FFmpeg (``careshare.testing.strategies.video``); the remux is
called directly and through the hook. Each copy is read back by an ISO BMFF box walk of its
own here and by FFmpeg, and compared packet for packet with a plain ``+faststart`` copy.
"""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import av
import numpy as np
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from careshare.core.models import Source
from careshare.core.policy import Policy
from careshare.plugins.filetypes import video
from careshare.testing.strategies.video import VideoSpec, h264_encoder, video_specs, write_video

POLICY = Policy()


def boxes(path: Path) -> list[tuple[str, int]]:
    """(type, size) of the top-level ISO BMFF boxes of ``path`` (parsed here, not by the handler)."""
    data = path.read_bytes()
    found, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        elif size == 0:
            size = len(data) - offset
        found.append((kind.decode("latin-1"), size))
        if size < 8:
            break
        offset += size
    return found


def types(path: Path) -> list[str]:
    return [kind for kind, _ in boxes(path)]


def packets(path: Path) -> list[tuple[int, int | None, int | None, bool, bytes]]:
    """Every packet of every track: (track, pts, dts, keyframe, bytes)."""
    with av.open(str(path)) as media:
        return [
            (p.stream.index, p.pts, p.dts, p.is_keyframe, bytes(p))
            for p in media.demux()
            if p.size  # not the flush packets
        ]


def streamable(path: Path) -> bool:
    kinds = types(path)
    return kinds[0] == "ftyp" and "moov" in kinds and kinds.index("moov") < kinds.index("mdat")


def tracks_of(path: Path) -> list[int]:
    with av.open(str(path)) as media:
        return [s.index for s in media.streams if s.type in ("video", "audio")]


def reservation(path: Path, budget: int = 1 << 40) -> int | None:
    with video.open_media(path, "mov") as media:
        return video.moov_reservation(media, tracks_of(path), budget)


def remux(path: Path, dst: Path, reserve: int | None) -> tuple[dict[int, int], bool]:
    return video.remux_streamable(path, video.MP4, tracks_of(path), dst, "mp4", POLICY, reserve)


iso_specs = video_specs(containers=("mp4", "mov"), max_side=64, max_frames=12)


@hypothesis_settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(iso_specs)
def test_the_space_kept_for_moov_always_holds_it_and_the_copy_has_the_faststart_copys_packets(spec: VideoSpec) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        original = directory / "original.mp4"
        write_video(spec, original)
        reserve = reservation(original)
        assert reserve is not None
        kept, faststart = directory / "kept.mp4", directory / "faststart.mp4"

        counts, used = remux(original, kept, reserve)
        plain_counts, plain_used = remux(original, faststart, None)

        assert used and not plain_used
        assert counts == plain_counts
        assert streamable(kept) and streamable(faststart)
        layout = boxes(kept)
        # ftyp, moov, then the rest of the space kept as one free box, before mdat.
        assert [kind for kind, _ in layout[:3]] == ["ftyp", "moov", "free"]
        assert layout[1][1] + layout[2][1] == reserve
        assert packets(kept) == packets(faststart)
        with av.open(str(kept)) as media:
            assert sum(1 for _ in media.decode(video=0)) == spec.frames


@hypothesis_settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(iso_specs, st.integers(min_value=0, max_value=256))
def test_a_space_too_small_for_moov_falls_back_to_faststart_and_the_copy_still_starts_with_moov(
    spec: VideoSpec, reserve: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        original = directory / "original.mp4"
        write_video(spec, original)
        dst, faststart = directory / "shareable.mp4", directory / "faststart.mp4"

        counts, used = remux(original, dst, reserve)
        plain_counts, _ = remux(original, faststart, None)

        assert not used
        assert counts == plain_counts
        assert streamable(dst)
        assert video.top_level_boxes(dst) == types(dst)
        assert packets(dst) == packets(faststart)
        assert dst.read_bytes() == faststart.read_bytes()  # the fallback is the plain faststart copy


def test_no_space_is_kept_when_a_track_does_not_say_how_many_packets_it_has(tmp_path: Path) -> None:
    # A fragmented MP4 (moov first but empty, the samples in moof boxes): the count is unknown.
    fragmented = tmp_path / "fragmented.mp4"
    rng = np.random.default_rng(3)
    with av.open(str(fragmented), "w", format="mp4", options={"movflags": "frag_keyframe+empty_moov"}) as out:
        stream = out.add_stream(h264_encoder(), rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(10):
            picture = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    assert "moof" in types(fragmented)
    assert reservation(fragmented) is None

    counts, used = remux(fragmented, tmp_path / "shareable.mp4", None)
    assert not used and sum(counts.values()) == 10
    assert streamable(tmp_path / "shareable.mp4")


def test_no_space_is_kept_over_the_budget(tmp_path: Path) -> None:
    original = tmp_path / "original.mp4"
    write_video(VideoSpec(frames=12, audio_codec="aac"), original)
    needed = reservation(original)
    assert needed is not None
    assert reservation(original, budget=needed) == needed
    assert reservation(original, budget=needed - 1) is None


def noisy_mp4(path: Path, frames: int = 12) -> None:
    """A small MP4 of noise at a high bit rate: large enough for the handler to keep space for moov."""
    rng = np.random.default_rng(9)
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream(h264_encoder(), rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        if h264_encoder() == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "0"}
        else:
            stream.bit_rate = 50_000_000
        for _ in range(frames):
            picture = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_the_handler_keeps_space_for_moov_in_a_large_copy_and_says_its_version(tmp_path: Path) -> None:
    original = tmp_path / "upload.mp4"
    noisy_mp4(original)
    reserve = reservation(original, budget=int(original.stat().st_size * video.MOOV_RESERVE_SHARE))
    assert reserve is not None, "the input must be large enough for the handler to keep space"
    workdir = tmp_path / "work"
    workdir.mkdir()
    source = Source(
        path=original,
        sha256="0" * 64,
        size=original.stat().st_size,
        kind="video",
        media_type="video/mp4",
        workdir=workdir,
    )

    processed = video.careshare_process(source=source, kind="video", policy=POLICY)

    assert processed is not None
    assert processed.handler_version.startswith("2 ")
    [shareable] = [r.path for r in processed.renditions if r.role == "shareable"]
    assert shareable is not None
    layout = boxes(shareable)
    assert [kind for kind, _ in layout[:3]] == ["ftyp", "moov", "free"]
    assert layout[1][1] + layout[2][1] == reserve
    assert "moov-moved-to-front" in processed.changes
    # The same packets as a plain faststart copy of the same tracks.
    faststart = tmp_path / "faststart.mp4"
    remux(original, faststart, None)
    assert packets(shareable) == packets(faststart)
