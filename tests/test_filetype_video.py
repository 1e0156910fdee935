"""The video handler: containers by their bytes, playlists refused unread, posters, private streamable copies.

Files are written by PyAV's own FFmpeg (``careshare.testing.strategies.video``) or taken from the
shared corpus; the hooks are called directly on a temporary path, and two tests go through the
HTTP API where the handler runs in its own process.
"""

from __future__ import annotations

import csv
import ctypes
import io
import os
import struct
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PIL import Image

from careshare.core.models import Processed, Source
from careshare.core.policy import Policy
from careshare.core.problems import Problem
from careshare.plugins.filetypes import video
from careshare.testing.strategies.video import VideoSpec, h264_encoder, make_video, videos, write_video

if TYPE_CHECKING:
    from litestar.testing import AsyncTestClient

CORPUS = Path("/work/shared/corpus")
GPS = "+12.3456-045.6789+010.000/"
# What each MANIFEST.tsv refusal reason becomes here.
REASON_CODES = {
    "playlist": "video-unreadable",
    "corrupt": "video-unreadable",
    "notvideo": "video-no-video-stream",
    "format": "video-format-unsupported",
}
PRIVATE_KEY_WORDS = ("location", "make", "model", "software", "creation", "gps", "iso6709", "android")


# -- helpers -----------------------------------------------------------------------------------------


def process_bytes(directory: Path, data: bytes, *, name: str = "upload.mp4", policy: Policy | None = None) -> Processed:
    """Identify ``data`` and run the video handler on it, as ingest would (without the child process)."""
    path = directory / name
    path.write_bytes(data)
    return process_path(directory, path, policy=policy)


def process_path(directory: Path, path: Path, *, policy: Policy | None = None) -> Processed:
    ident = video.careshare_identify(path.read_bytes()[:65536])
    assert ident is not None and ident.kind == "video", path.name
    workdir = Path(tempfile.mkdtemp(dir=directory, prefix="work-"))
    source = Source(
        path=path, sha256="0" * 64, size=path.stat().st_size, kind="video", media_type=ident.media_type, workdir=workdir
    )
    result = video.careshare_process(source=source, kind="video", policy=policy or Policy())
    assert isinstance(result, Processed)
    return result


def rendition_path(processed: Processed, role: str) -> Path:
    found = [r for r in processed.renditions if r.role == role]
    assert len(found) == 1, [r.role for r in processed.renditions]
    assert found[0].path is not None
    return found[0].path


def boxes_of(data: bytes) -> list[str]:
    """Top-level ISO BMFF box types of ``data`` (parsed here, independently of the handler)."""
    types, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        elif size == 0:
            size = len(data) - offset
        types.append(kind.decode("latin-1"))
        if size < 8:
            break
        offset += size
    return types


def all_metadata(path: Path) -> dict[str, str]:
    with av.open(str(path)) as media:
        found = dict(media.metadata)
        for stream in media.streams:
            found.update({f"{stream.index}:{k}": v for k, v in stream.metadata.items()})
    return found


def private_keys(metadata: dict[str, str]) -> list[str]:
    return [k for k in metadata if any(word in k.lower() for word in PRIVATE_KEY_WORDS)]


def stream_codecs(path: Path) -> list[tuple[str, str]]:
    with av.open(str(path)) as media:
        return [(s.type, video.codec_name(s)) for s in media.streams]


def refusal(directory: Path, data: bytes, **kwargs: Any) -> Problem:
    with pytest.raises(Problem) as caught:
        process_bytes(directory, data, **kwargs)
    return caught.value


class InotifyWatch:
    """Counts opens and reads of one file through Linux inotify: proof that nobody touched it."""

    IN_ACCESS, IN_OPEN = 0x1, 0x20

    def __init__(self, path: Path) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0, ctypes.get_errno()
        assert self.libc.inotify_add_watch(self.fd, os.fsencode(path), self.IN_ACCESS | self.IN_OPEN) >= 0

    def events(self) -> int:
        count = 0
        while True:
            try:
                count += len(os.read(self.fd, 4096))
            except BlockingIOError:
                return count

    def close(self) -> None:
        os.close(self.fd)


# -- identify ----------------------------------------------------------------------------------------


def ftyp(major: str, *compatible: str) -> bytes:
    brands = b"".join(b.ljust(4).encode() for b in compatible)
    body = major.ljust(4).encode() + b"\x00\x00\x02\x00" + brands
    return struct.pack(">I", 8 + len(body)) + b"ftyp" + body + b"\x00\x00\x00\x08free"


def ebml(doctype: bytes) -> bytes:
    header = b"\x42\x86\x81\x01" + b"\x42\x82" + bytes([0x80 | len(doctype)]) + doctype
    return b"\x1a\x45\xdf\xa3" + bytes([0x80 | len(header)]) + header + b"\x18\x53\x80\x67"


@pytest.mark.parametrize(
    ("head", "media_type"),
    [
        (ftyp("isom", "isom", "iso2", "avc1", "mp41"), "video/mp4"),
        (ftyp("mp42", "isom"), "video/mp4"),
        (ftyp("M4V ", "M4V", "mp42"), "video/mp4"),
        (ftyp("dash", "iso6"), "video/mp4"),
        (ftyp("qt  ", "qt"), "video/quicktime"),
        (ftyp("3gp4", "3gp4"), "video/3gpp"),
        (ftyp("3g2a", "3g2a"), "video/3gpp2"),
        (ftyp("zzzz", "isom", "mp42"), "video/mp4"),  # unknown major brand, video-compatible
        (b"\x00\x00\x00\x08wide\x00\x00\x10\x00mdat", "video/quicktime"),  # QuickTime before ftyp existed
        (b"\x00\x00\x01\x00moov\x00\x00\x00\x6cmvhd", "video/quicktime"),
        (ebml(b"webm"), "video/webm"),
        (ebml(b"matroska"), "video/x-matroska"),
        (b"RIFF\x00\x10\x00\x00AVI LIST", "video/x-msvideo"),
        (b"".join(b"\x47" + bytes(187) for _ in range(6)), "video/mp2t"),
        (b"".join(bytes(4) + b"\x47" + bytes(187) for _ in range(6)), "video/mp2t"),
        (b"ID3\x03\x00\x00\x00\x00\x01\x00", "audio/mpeg"),
        (b"#EXTM3U\n#EXT-X-VERSION:3\nseg.ts\n", "application/vnd.apple.mpegurl"),
        (b"\xef\xbb\xbf \n#EXTM3U\n", "application/vnd.apple.mpegurl"),
        ("#EXTM3U\nhttp://example.org/a.ts\n".encode("utf-16"), "application/vnd.apple.mpegurl"),
        (b"ffconcat version 1.0\nfile /etc/passwd\n", "text/plain"),
        (
            b'<?xml version="1.0"?>\n<!-- manifest -->\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011">',
            "application/dash+xml",
        ),
        (b'<smil xmlns="http://www.w3.org/ns/SMIL"><body><video src="a.mp4"/></body></smil>', "application/smil+xml"),
        (b"<SmoothStreamingMedia MajorVersion='2'>", "application/vnd.ms-sstr+xml"),
        (b"[playlist]\nFile1=http://example.org/a.mp4\n", "audio/x-scpls"),
        (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\nm=video 5004 RTP/AVP 96\r\n", "application/sdp"),
    ],
)
def test_identify_claims_videos_and_playlists_by_their_bytes(head: bytes, media_type: str) -> None:
    ident = video.careshare_identify(head)
    assert ident is not None
    assert (ident.kind, ident.media_type) == ("video", media_type)


@pytest.mark.parametrize(
    "head",
    [
        ftyp("heic", "mif1", "heic"),  # the image handler's
        ftyp("mif1", "mif1", "heic"),
        ftyp("avif", "avif", "mif1"),
        ftyp("avis", "avis", "msf1"),
        ftyp("zzzz", "mif1", "isom"),  # unknown major brand that says it is an image
        ftyp("M4A ", "M4A", "mp42"),  # sound only: not a video
        ebml(b"mka-ish"),
        b"%PDF-1.7\n",
        b"\x89PNG\r\n\x1a\n",
        b"RIFF\x00\x10\x00\x00WEBPVP8 ",
        b"<svg xmlns='http://www.w3.org/2000/svg'><!-- <MPD --></svg>",
        b"just some text about #EXTM3U playlists\n",
        b"",
    ],
)
def test_identify_leaves_other_files_alone(head: bytes) -> None:
    assert video.careshare_identify(head) is None


@given(st.binary(max_size=4096))
def test_identify_never_crashes_on_random_bytes(head: bytes) -> None:
    ident = video.careshare_identify(head)
    assert ident is None or ident.kind == "video"


MAGICS = [
    ftyp("isom", "isom", "mp41"),
    ftyp("qt  "),
    ebml(b"webm"),
    ebml(b"matroska"),
    b"ID3\x03\x00\x00\x00\x00\x00\x10",
    b"\x00\x00\x00\x08wide",
    b"\x00\x00\x00\x00moov",
]


@given(st.sampled_from(MAGICS), st.binary(max_size=2048))
@example(MAGICS[0], b"\x00\x00\x00\x10mdat" + bytes(8))
def test_identify_and_process_of_random_bytes_after_video_magic_raise_only_problems(magic: bytes, tail: bytes) -> None:
    data = magic + tail
    assert video.careshare_identify(data[:65536]) is not None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            process_bytes(Path(tmp), data)
        except Problem as problem:
            assert problem.code.startswith("video-")


# -- accepted videos ---------------------------------------------------------------------------------


def test_mp4_with_moov_at_the_end_gets_a_streamable_shareable_copy(tmp_path: Path) -> None:
    data = make_video(VideoSpec(audio_codec="aac", frames=10, moov_at_end=True))
    assert boxes_of(data).index("mdat") < boxes_of(data).index("moov"), "the input must need fixing"
    processed = process_bytes(tmp_path, data)

    shareable = rendition_path(processed, "shareable").read_bytes()
    boxes = boxes_of(shareable)
    assert boxes[0] == "ftyp"
    assert boxes.index("moov") < boxes.index("mdat")
    assert processed.metadata["streamable"] is False  # said of the original
    assert "moov-moved-to-front" in processed.changes
    assert processed.metadata["mobile_playable"] is (h264_encoder() == "libx264")
    assert processed.metadata["has_audio"] is True and processed.metadata["audio_codec"] == "aac"
    assert (processed.metadata["width"], processed.metadata["height"]) == (64, 48)
    assert processed.metadata["duration_seconds"] == pytest.approx(1.0, abs=0.15)
    assert processed.metadata["frame_rate"] == pytest.approx(10.0)
    assert "PyAV" in processed.handler_version and "FFmpeg" in processed.handler_version


def test_mp4_already_streamable_is_said_so(tmp_path: Path) -> None:
    processed = process_bytes(tmp_path, make_video(VideoSpec(moov_at_end=False)))
    assert processed.metadata["streamable"] is True
    assert "moov-moved-to-front" not in processed.changes
    boxes = boxes_of(rendition_path(processed, "shareable").read_bytes())
    assert boxes.index("moov") < boxes.index("mdat")


def test_mp4_location_is_stripped_from_the_shareable_copy(tmp_path: Path) -> None:
    spec = VideoSpec(audio_codec="aac", metadata={"location": GPS}, stream_metadata={"handler_name": "Pat's camera"})
    data = make_video(spec)
    # FFmpeg's MP4 muxer stores the location as a binary 3GPP 'loci' box; its demuxer reads it back.
    assert b"loci" in data and b"Pat's camera" in data, "the input must carry what is stripped"
    assert all_metadata_of_bytes(data, tmp_path)["location"].startswith("+12.3456-045.6789")
    processed = process_bytes(tmp_path, data)

    shareable = rendition_path(processed, "shareable")
    assert b"loci" not in shareable.read_bytes() and b"\xa9xyz" not in shareable.read_bytes()
    assert b"Pat's camera" not in shareable.read_bytes()
    assert private_keys(all_metadata(shareable)) == []
    assert processed.metadata["had_location"] is True
    assert {"metadata-stripped", "location-removed"} <= set(processed.changes)


def test_quicktime_location_and_device_keys_are_stripped(tmp_path: Path) -> None:
    keys = {
        "com.apple.quicktime.location.ISO6709": GPS,
        "com.apple.quicktime.make": "Apple",
        "com.apple.quicktime.model": "iPhone 99 Pro",
    }
    data = make_video(VideoSpec(container="mov", audio_codec="aac", metadata=keys))
    assert all(k in all_metadata_of_bytes(data, tmp_path) for k in keys)
    processed = process_bytes(tmp_path, data, name="IMG_0001.MOV")

    shareable = rendition_path(processed, "shareable")
    assert rendition_media_type(processed, "shareable") == "video/quicktime"
    assert private_keys(all_metadata(shareable)) == []
    assert GPS.encode() not in shareable.read_bytes() and b"iPhone 99" not in shareable.read_bytes()
    assert processed.metadata["had_location"] is True and processed.metadata["had_device_info"] is True


def all_metadata_of_bytes(data: bytes, directory: Path) -> dict[str, str]:
    path = directory / "probe.bin"
    path.write_bytes(data)
    return all_metadata(path)


def rendition_media_type(processed: Processed, role: str) -> str:
    return next(r.media_type for r in processed.renditions if r.role == role)


def brightness(path: Path) -> float:
    with Image.open(path) as image:
        return float(np.asarray(image.convert("L")).mean())


@pytest.mark.parametrize(("frames", "black", "gop"), [(30, 6, None), (30, 6, 5), (20, 1, None), (40, 30, None)])
def test_poster_is_not_a_black_frame(tmp_path: Path, frames: int, black: int, gop: int | None) -> None:
    spec = VideoSpec(frames=frames, fps=10, black_frames=black, gop=gop, width=96, height=64)
    processed = process_bytes(tmp_path, make_video(spec))

    poster, thumbnail = rendition_path(processed, "poster"), rendition_path(processed, "thumbnail")
    assert brightness(poster) > 60, "the poster must come from the bright part"
    assert processed.metadata["poster_seconds"] >= black / spec.fps
    with Image.open(poster) as image:
        assert image.format == "JPEG" and image.size == (96, 64)
        assert not image.info.get("exif")
    with Image.open(thumbnail) as image:
        assert max(image.size) <= Policy().thumbnail_size


def test_poster_is_about_ten_percent_in_when_there_is_one_keyframe(tmp_path: Path) -> None:
    spec = VideoSpec(frames=60, fps=10, gop=600)  # one keyframe, at 0 s
    processed = process_bytes(tmp_path, make_video(spec))
    assert processed.metadata["poster_seconds"] == pytest.approx(0.6, abs=0.11)


@pytest.mark.parametrize(
    "spec",
    [
        VideoSpec(container="webm", video_codec="vp9", audio_codec="opus"),
        VideoSpec(container="webm", video_codec="vp8"),
        VideoSpec(container="matroska", video_codec="h264", audio_codec="aac", bframes=2),
    ],
    ids=["webm-vp9-opus", "webm-vp8", "mkv-h264-aac"],
)
def test_webm_and_matroska_are_remuxed_to_their_own_container(tmp_path: Path, spec: VideoSpec) -> None:
    processed = process_bytes(tmp_path, make_video(spec), name="clip.webm")
    shareable = rendition_path(processed, "shareable")
    assert rendition_media_type(processed, "shareable") == spec.media_type
    assert stream_codecs(shareable) == [("video", spec.video_codec)] + (
        [("audio", spec.audio_codec)] if spec.audio_codec else []
    )
    left = all_metadata(shareable)
    # Matroska's muxer always names itself (bitexact: "Lavf", no version) and each track's duration.
    assert left.pop("encoder", "Lavf") == "Lavf"
    assert [k for k in left if k.split(":")[-1] != "DURATION"] == []
    assert processed.metadata["mobile_playable"] is False
    assert processed.metadata["streamable"] is True


@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(videos(max_side=64, max_frames=10))
def test_random_valid_videos_are_accepted_and_their_shareable_copy_reopens(sample: tuple[VideoSpec, bytes]) -> None:
    spec, data = sample
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        original = directory / "original.bin"
        original.write_bytes(data)
        processed = process_path(directory, original)

        shareable = rendition_path(processed, "shareable")
        assert stream_codecs(shareable) == stream_codecs(original)
        with av.open(str(shareable)) as media:
            frames = sum(1 for _ in media.decode(video=0))
        assert frames == spec.frames
        if spec.container in ("mp4", "mov"):
            boxes = boxes_of(shareable.read_bytes())
            assert boxes.index("moov") < boxes.index("mdat")
            assert processed.metadata["streamable"] is not spec.moov_at_end
        with Image.open(rendition_path(processed, "poster")) as poster:
            poster.load()
            assert poster.size == (spec.width, spec.height)
        assert processed.metadata["has_audio"] is (spec.audio_codec is not None)


# -- refusals ----------------------------------------------------------------------------------------


def audio_only_mp4(cover: bool) -> bytes:
    """An AAC-only MP4, optionally with cover art (an attached picture, which is not video)."""
    out_buffer = io.BytesIO()
    with av.open(out_buffer, "w", format="mp4") as out:
        audio = out.add_stream("aac", rate=48000)
        audio.layout = "mono"
        if cover:
            picture = out.add_stream("mjpeg")
            picture.width, picture.height, picture.pix_fmt = 32, 32, "yuvj420p"
            picture.disposition = av.stream.Disposition.attached_pic
        for start in range(0, 48000, 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 48000, start
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
        if cover:
            art = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 200, dtype=np.uint8), format="rgb24")
            for packet in picture.encode(art.reformat(format="yuvj420p")):
                out.mux(packet)
            out.mux(picture.encode(None))
    return out_buffer.getvalue()


@pytest.mark.parametrize("cover", [False, True], ids=["sound-only", "sound-with-cover-art"])
def test_audio_only_mp4_is_refused(tmp_path: Path, cover: bool) -> None:
    data = audio_only_mp4(cover)
    if cover:  # the cover really is there, as an attached picture FFmpeg lists as a video stream
        with av.open(io.BytesIO(data)) as media:
            assert [s.disposition & av.stream.Disposition.attached_pic for s in media.streams.video]
    problem = refusal(tmp_path, data, name="voice-note.mp4")
    assert problem.code == "video-no-video-stream"
    assert problem.status == 422


def test_playlist_named_mp4_is_refused_without_its_segment_ever_being_opened(tmp_path: Path) -> None:
    segment = tmp_path / "segment0.ts"
    write_video(VideoSpec(container="matroska", video_codec="h264"), segment)
    playlist = (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n"
        f"{segment}\n#EXTINF:1.0,\nfile://{segment}\n#EXT-X-ENDLIST\n"
    ).encode()
    watch = InotifyWatch(segment)
    try:
        problem = refusal(tmp_path, playlist, name="holiday.mp4")
        assert problem.code == "video-unreadable"
        assert "playlist" in problem.detail
        assert watch.events() == 0, "the playlist's segment was opened"

        # The guard under identify: even handed to FFmpeg's HLS demuxer, nothing else is opened.
        path = tmp_path / "holiday.mp4"
        with pytest.raises(video.ExternalReferenceRefused), video.open_media(path, "hls"):
            pass
        assert watch.events() == 0, "a demuxer opened the segment through open_media"

        # The watch does see opens: FFmpeg left to itself follows the playlist.
        with pytest.raises(av.error.FFmpegError), av.open(str(path), format="hls"):
            pass
        assert watch.events() > 0, "control: FFmpeg's HLS demuxer should have opened the segment"
    finally:
        watch.close()


@pytest.mark.parametrize(
    ("policy", "extra"),
    [
        (Policy().with_section(video.VideoOptions(max_pixels=64 * 48 - 1)), "pixels"),
        (Policy().with_section(video.VideoOptions(max_seconds=0.5)), "seconds"),
    ],
)
def test_caps_refuse_too_large_videos(tmp_path: Path, policy: Policy, extra: str) -> None:
    problem = refusal(tmp_path, make_video(VideoSpec(frames=10, fps=10)), policy=policy)
    assert problem.code == "video-too-large"
    assert extra in problem.extra
    assert "upload" in problem.detail


def test_caps_are_inclusive(tmp_path: Path) -> None:
    policy = Policy().with_section(video.VideoOptions(max_pixels=64 * 48, max_seconds=5))
    assert process_bytes(tmp_path, make_video(VideoSpec(frames=10, fps=10)), policy=policy).metadata["width"] == 64


def other_container(muxer: str) -> bytes:
    out_buffer = io.BytesIO()
    with av.open(out_buffer, "w", format=muxer) as out:
        stream = out.add_stream("flv" if muxer == "flv" else "mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for index in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * index, dtype=np.uint8), format="rgb24")
            out.mux(stream.encode(frame.reformat(format="yuv420p")))
        out.mux(stream.encode(None))
    return out_buffer.getvalue()


@pytest.mark.parametrize(("muxer", "words"), [("avi", "AVI"), ("mpegts", "transport stream"), ("flv", "Flash")])
def test_avi_ts_and_flv_are_refused_with_advice_to_convert_to_mp4(tmp_path: Path, muxer: str, words: str) -> None:
    problem = refusal(tmp_path, other_container(muxer), name=f"clip.{muxer}")
    assert problem.code == "video-format-unsupported"
    assert problem.status == 415
    assert words in problem.detail and "MP4" in problem.detail


def test_truncated_mp4_is_unreadable(tmp_path: Path) -> None:
    data = make_video(VideoSpec(frames=10, moov_at_end=True))
    problem = refusal(tmp_path, data[: len(data) // 2])  # the moov atom is cut off
    assert problem.code == "video-unreadable"


def test_every_problem_sentence_is_plain_and_actionable() -> None:
    types = [
        video.VIDEO_UNREADABLE,
        video.VIDEO_NO_VIDEO_STREAM,
        video.VIDEO_TOO_LARGE,
        video.VIDEO_FORMAT_UNSUPPORTED,
    ]
    assert [t.code for t in types] == [
        "video-unreadable",
        "video-no-video-stream",
        "video-too-large",
        "video-format-unsupported",
    ]
    for sentence in [t.detail for t in types] + [video.PLAYLIST_DETAIL, video.CODEC_DETAIL, video.REFERENCE_DETAIL]:
        assert sentence.endswith(".") and "upload" in sentence.lower()
        assert "FFmpeg" not in sentence and "demux" not in sentence


# -- the shared corpus -------------------------------------------------------------------------------


def corpus_rows() -> list[dict[str, str]]:
    with open(CORPUS / "MANIFEST.tsv", newline="") as fp:
        rows = list(csv.DictReader(fp, delimiter="\t"))
    return [r for r in rows if r["path"].startswith(("video/", "other/"))]


@pytest.mark.parametrize("row", corpus_rows(), ids=lambda r: r["path"])
def test_corpus_file_ends_as_the_manifest_says(tmp_path: Path, row: dict[str, str]) -> None:
    # No disagreement with MANIFEST.tsv: every video/ and other/ file ends as expected. The mapping
    # of reasons to codes is REASON_CODES (a playlist is "unreadable" as a video, by the rule).
    path = CORPUS / row["path"]
    expected = row["expected"]
    if expected == "accept":
        processed = process_path(tmp_path, path)
        shareable = rendition_path(processed, "shareable")
        assert stream_codecs(shareable) == [
            c for c in stream_codecs(path) if c[0] in ("video", "audio") and c[1] != "mjpeg"
        ]
        assert private_keys(all_metadata(shareable)) == []
        assert brightness(rendition_path(processed, "poster")) > 10
    else:
        with pytest.raises(Problem) as caught:
            process_path(tmp_path, path)
        assert caught.value.code == REASON_CODES[expected.removeprefix("refuse:")], caught.value.detail


def test_corpus_iphone_mov_loses_its_gps_and_keeps_its_rotation(tmp_path: Path) -> None:
    original = CORPUS / "video/exoplayer_dolbyVision-hdr.MOV"
    location = all_metadata(original)["com.apple.quicktime.location.ISO6709"]
    assert location.encode() in original.read_bytes()
    processed = process_path(tmp_path, original)

    shareable = rendition_path(processed, "shareable")
    data = shareable.read_bytes()
    assert location.encode() not in data and b"iPhone" not in data
    assert private_keys(all_metadata(shareable)) == []
    assert processed.metadata["had_location"] is True and processed.metadata["had_device_info"] is True
    boxes = boxes_of(data)
    assert boxes.index("moov") < boxes.index("mdat")
    with av.open(str(shareable)) as media:
        assert media.streams.video[0].codec_context.codec_tag == "hvc1"  # Apple plays HEVC only as hvc1
        frame = next(media.decode(video=0))
        assert frame.rotation % 360 == processed.metadata["rotation"] == 270
    with Image.open(rendition_path(processed, "poster")) as poster:
        assert poster.size == (720, 1280)  # portrait, as the phone showed it


def test_corpus_mp3_cover_art_is_an_attached_picture_not_video(tmp_path: Path) -> None:
    path = CORPUS / "other/exoplayer_bear-id3.mp3"
    with video.open_media(path, "mp3") as media:
        assert len(media.streams.video) == 1  # FFmpeg lists the cover as a stream ...
        with pytest.raises(Problem) as caught:
            video.probe(media, Policy())  # ... which is not counted as video
    assert caught.value.code == "video-no-video-stream"


# -- through the API ---------------------------------------------------------------------------------


async def test_upload_through_the_api_serves_a_streamable_private_copy_with_ranges(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    data = make_video(VideoSpec(audio_codec="aac", frames=20, moov_at_end=True, metadata={"location": GPS}))
    response = await client.post(
        f"/v1/patients/{patient_id}/files", content=data, params={"filename": "clinic-visit.mp4"}, headers=clinician
    )
    assert response.status_code == 201, response.text
    stored = response.json()
    assert (stored["kind"], stored["media_type"], stored["status"]) == ("video", "video/mp4", "ready")
    assert {r["role"] for r in stored["renditions"]} >= {"original", "shareable", "poster", "thumbnail"}
    assert stored["metadata"]["streamable"] is False and stored["metadata"]["had_location"] is True
    assert stored["check"]["handler"] == "video" and "moov-moved-to-front" in stored["check"]["changes"]
    shareable = next(r for r in stored["renditions"] if r["role"] == "shareable")

    url = f"/v1/files/{stored['id']}/content"
    head = await client.get(url, params={"rendition": "shareable"}, headers={**clinician, "Range": "bytes=0-4095"})
    assert head.status_code == 206, head.text
    assert head.headers["content-range"] == f"bytes 0-4095/{shareable['size']}"
    assert boxes_of(head.content)[:2] == ["ftyp", "moov"]  # a phone learns the layout from the first range

    whole = await client.get(url, params={"rendition": "shareable"}, headers=clinician)
    assert whole.status_code == 200 and whole.content.startswith(head.content)
    assert GPS.encode() not in whole.content


async def test_playlist_upload_through_the_api_is_refused(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    body = (CORPUS / "other/exoplayer_media_playlist_named_as.mp4").read_bytes()
    response = await client.post(
        f"/v1/patients/{patient_id}/files", content=body, params={"filename": "video.mp4"}, headers=clinician
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "video-unreadable"
    assert problem["detail"] == video.PLAYLIST_DETAIL
