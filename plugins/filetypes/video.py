"""Video handler: containers known by their bytes, playlists refused unread, a poster and a private streamable copy.

FFmpeg (through PyAV) only ever reads the uploaded bytes: the container format is forced from
the bytes, the input is a Python file object, and every further open a demuxer attempts (HLS
segments, ffconcat entries, QuickTime data references) goes through :func:`_refuse_nested_open`,
which refuses it. Playlists and manifests are recognised by content and refused before FFmpeg
sees them. The ``shareable`` copy is a remux (packets copied, nothing re-encoded) of the video
and audio tracks with all container and stream metadata dropped and, for MP4/MOV, ``moov``
before ``mdat`` so phones can stream it with HTTP ranges.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import re
import struct
from typing import TYPE_CHECKING, Any

import attrs
import av
import av.error
import numpy as np
from PIL import Image

from careshare import hookimpl
from careshare.core.kinds import Kind, KindRefusal
from careshare.core.models import Identification, Processed, RenditionOutput
from careshare.core.problems import Problem, ProblemType
from careshare.core.storage import start_writeback
from careshare.plugins.filetypes.imaging import save_jpeg, thumbnail_rendition

if TYPE_CHECKING:
    from collections.abc import Iterator
    from fractions import Fraction
    from pathlib import Path

    from av.container import InputContainer
    from av.packet import Packet
    from av.stream import Stream
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream

    from careshare.core.models import Source
    from careshare.core.policy import Policy

__all__ = [
    "CODEC_DETAIL",
    "HANDLER_VERSION",
    "KIND",
    "PLAYLIST_DETAIL",
    "POSTER_AT",
    "REFERENCE_DETAIL",
    "VIDEO_FORMAT_UNSUPPORTED",
    "VIDEO_NOT_ALLOWED",
    "VIDEO_NO_VIDEO_STREAM",
    "VIDEO_TOO_LARGE",
    "VIDEO_UNREADABLE",
    "Container",
    "ExternalReferenceRefused",
    "Probe",
    "VideoOptions",
    "careshare_identify",
    "careshare_kinds",
    "careshare_process",
    "codec_name",
    "open_media",
    "poster_frame",
    "probe",
    "sniff",
    "top_level_boxes",
]

logger = logging.getLogger(__name__)

KIND = "video"
# 2: large MP4/MOV copies are written with their moov in space kept for it (a `free` box pads the rest).
HANDLER_VERSION = f"2 (PyAV {av.__version__}, FFmpeg {av.ffmpeg_version_info})"

VIDEO_UNREADABLE = ProblemType(
    "video-unreadable",
    422,
    "Video could not be read",
    "This file looks like a video but could not be played: it may be damaged or incomplete."
    " Copy or export it again from the device that recorded it and upload the new copy.",
)
VIDEO_NO_VIDEO_STREAM = ProblemType(
    "video-no-video-stream",
    422,
    "No moving picture in this file",
    "This file has no moving picture: it holds only sound, or sound with a cover image."
    " Upload a video recording instead, for example an MP4 from the phone's camera.",
)
VIDEO_TOO_LARGE = ProblemType(
    "video-too-large",
    422,
    "Video too long or too large",
    "This video is too long or its picture is too large to share."
    " Shorten it, or export it at a lower resolution such as 1080p, and upload the new copy.",
)
#: Where a target leaves videos out (``GET /v1/targets`` shows ``video_allowed``): a stable code of the API.
VIDEO_NOT_ALLOWED = ProblemType(
    "video-not-allowed", 422, "Video not allowed here", "Videos cannot be attached to this item."
)
VIDEO_FORMAT_UNSUPPORTED = ProblemType(
    "video-format-unsupported",
    415,
    "Video format not supported",
    "This video is in a format that phones cannot reliably play."
    " Convert it to MP4 (most video editors and phone apps can export MP4) and upload the new copy.",
)

PLAYLIST_DETAIL = (
    "This file is a streaming playlist: a list of links to video pieces stored elsewhere, not a video itself,"
    " so there is nothing in it to share. Upload the video file itself, for example the MP4 saved on the device."
)
REFERENCE_DETAIL = (
    "This video does not hold its pictures itself but points to other files, which careshare never opens."
    " Export it again as a single self-contained MP4 and upload that."
)
CODEC_DETAIL = (
    "This video's picture is stored in a format (codec) careshare cannot play."
    " Export it as an MP4 (H.264) and upload the new copy."
)
FORMAT_DETAIL = (
    "This video is {label}, a format that phones cannot reliably play."
    " Convert it to MP4 (most video editors and phone apps can export MP4) and upload the new copy."
)
DURATION_DETAIL = (
    "This video is {actual} long; careshare accepts videos of up to {limit}."
    " Shorten it or split it into parts and upload them one by one."
)
PIXELS_DETAIL = (
    "This video's picture is {width}x{height} pixels, more than careshare accepts ({limit} pixels)."
    " Export it at a lower resolution such as 1080p and upload the new copy."
)


@attrs.frozen
class VideoOptions:
    """The video handler's section of the policy (``Policy.section(VideoOptions)``)."""

    #: Largest width x height accepted (8K).
    max_pixels: int = 7680 * 4320
    #: Longest duration accepted, in seconds.
    max_seconds: float = 4 * 3600


@hookimpl
def careshare_kinds() -> list[Kind]:
    refusal = KindRefusal(
        VIDEO_NOT_ALLOWED, "video_allowed", "Videos cannot be attached here: {target} can't contain streaming video."
    )
    return [Kind(KIND, "a video", options=VideoOptions, refusal=refusal)]


# -- containers, from their bytes -------------------------------------------------------------------


@attrs.frozen
class Container:
    """A file layout recognised from its bytes, and how (or whether) careshare reads and rewrites it."""

    name: str
    media_type: str
    #: The FFmpeg demuxer forced on open; None: never handed to FFmpeg.
    demuxer: str | None = None
    #: The muxers tried, in order, for the shareable remux; empty: refused as an unsupported format.
    muxers: tuple[str, ...] = ()
    #: Words naming the format in a refusal sentence.
    label: str = ""
    playlist: bool = False


MP4 = Container("mp4", "video/mp4", "mov", ("mp4", "mov"))
MOV = Container("mov", "video/quicktime", "mov", ("mov",))
THREE_GP = Container("3gp", "video/3gpp", "mov", ("mp4", "mov"))
THREE_G2 = Container("3g2", "video/3gpp2", "mov", ("mp4", "mov"))
WEBM = Container("webm", "video/webm", "matroska", ("webm", "matroska"))
MATROSKA = Container("matroska", "video/x-matroska", "matroska", ("matroska",))
# Opened only to show there is no picture in it: an MP3's ID3 cover art is an attached picture.
MP3 = Container("mp3", "audio/mpeg", "mp3", ())
AVI = Container("avi", "video/x-msvideo", label="an AVI file (.avi)")
MPEG_TS = Container("mpegts", "video/mp2t", label="an MPEG transport stream (.ts)")
M2TS = Container("m2ts", "video/mp2t", label="an MPEG transport stream from a camcorder (.m2ts or .mts)")
MPEG_PS = Container("mpeg", "video/mpeg", label="an MPEG program stream (.mpg or .vob)")
FLV = Container("flv", "video/x-flv", label="a Flash video (.flv)")
ASF = Container("asf", "video/x-ms-asf", label="a Windows Media file (.wmv or .asf)")

HLS = Container("hls", "application/vnd.apple.mpegurl", playlist=True)
FFCONCAT = Container("ffconcat", "text/plain", playlist=True)
DASH = Container("dash", "application/dash+xml", playlist=True)
SMIL = Container("smil", "application/smil+xml", playlist=True)
SMOOTH_STREAMING = Container("smooth-streaming", "application/vnd.ms-sstr+xml", playlist=True)
ASX = Container("asx", "video/x-ms-asx", playlist=True)
XSPF = Container("xspf", "application/xspf+xml", playlist=True)
PLS = Container("pls", "audio/x-scpls", playlist=True)
SDP = Container("sdp", "application/sdp", playlist=True)

_VIDEO_BRANDS = frozenset(
    b.ljust(4).encode()
    for b in (
        "isom", "iso2", "iso3", "iso4", "iso5", "iso6", "iso8", "iso9", "mp41", "mp42", "mp71", "avc1",
        "hvc1", "hev1", "av01", "M4V", "M4VH", "M4VP", "qt", "3gp4", "3gp5", "3gp6", "3gp7", "3gp8",
        "3gp9", "3gg6", "3gg9", "3gr6", "3gs6", "3ge6", "3ge7", "3g2a", "3g2b", "3g2c", "dash", "msdh",
        "cmfc", "cmff", "MSNV", "NDAS", "NDSC", "NDSH", "NDSM", "NDSP", "NDSS", "NDXC", "NDXH", "NDXM",
        "NDXP", "NDXS", "XAVC", "f4v", "mmp4", "mp4v", "kddi", "KDDI", "crx", "dby1", "caqv", "ROSS",
    )
)  # fmt: skip
# Claimed by the image handler (HEIF/AVIF stills and sequences) or by nobody (audio only).
_IMAGE_BRANDS = frozenset(
    b.ljust(4).encode()
    for b in (
        "heic", "heix", "heim", "heis", "hevc", "hevx", "hevm", "hevs", "mif1", "mif2", "msf1", "miaf",
        "avif", "avis", "avio", "jpeg", "jpgs", "MiHE", "MiHB", "MiHA", "MiA1", "MiA2", "MiAC", "MiAN",
    )
)  # fmt: skip
_AUDIO_BRANDS = frozenset(b.ljust(4).encode() for b in ("M4A", "M4B", "M4P", "F4A", "F4B", "mp4a"))
# Top-level atoms an old QuickTime file (no ftyp) may start with.
_QUICKTIME_ATOMS = frozenset((b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"))
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_ASF_GUID = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
_TS_PACKETS = 5
_XML_PLAYLIST_ROOTS = {
    "mpd": DASH,
    "smil": SMIL,
    "smoothstreamingmedia": SMOOTH_STREAMING,
    "asx": ASX,
    "playlist": XSPF,
}
_XML_SKIP = re.compile(rb"\s*(?:<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>]*>)", re.DOTALL | re.IGNORECASE)
_XML_ROOT = re.compile(rb"\s*<\s*(?:[\w.-]+:)?([\w.-]+)")


def sniff(head: bytes) -> Container | None:
    """The container or playlist these first bytes start, or None. Never raises for any bytes."""
    return _sniff_media(head) or _sniff_playlist(head)


def _sniff_media(head: bytes) -> Container | None:
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return _sniff_ftyp(head)
    if head.startswith(_EBML_MAGIC):
        return _sniff_ebml(head)
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return AVI
    if _strided_sync(head, 0, 188):
        return MPEG_TS
    if _strided_sync(head, 4, 192):
        return M2TS
    if head.startswith(b"\x00\x00\x01\xba"):
        return MPEG_PS
    if head.startswith(b"FLV\x01"):
        return FLV
    if head.startswith(_ASF_GUID):
        return ASF
    if head.startswith(b"ID3") and len(head) >= 10 and head[3] in (2, 3, 4):
        return MP3
    if len(head) >= 8 and head[4:8] in _QUICKTIME_ATOMS:
        size = struct.unpack(">I", head[:4])[0]
        if size in (0, 1) or size >= 8:
            return MOV
    return None


def _sniff_ftyp(head: bytes) -> Container | None:
    size = struct.unpack(">I", head[:4])[0]
    major = head[8:12]
    end = min(size if size >= 16 else 16, len(head), 4096)
    brands = {head[i : i + 4] for i in range(16, end - 3, 4)} | {major}
    if major in _IMAGE_BRANDS or major in _AUDIO_BRANDS:
        return None
    if major not in _VIDEO_BRANDS and (brands & _IMAGE_BRANDS or not brands & _VIDEO_BRANDS):
        return None
    if major == b"qt  ":
        return MOV
    if major[:3] in (b"3gp", b"3gg", b"3gs", b"3gr", b"3ge"):
        return THREE_GP
    if major.startswith(b"3g2"):
        return THREE_G2
    return MP4


def _read_vint(data: bytes, pos: int, *, keep_marker: bool = False) -> tuple[int, int] | None:
    """An EBML variable-length integer at ``pos``: (value, next position), or None when cut short."""
    if pos >= len(data) or data[pos] == 0:
        return None
    first = data[pos]
    length = 8 - first.bit_length() + 1
    if pos + length > len(data):
        return None
    value = first if keep_marker else first & (0xFF >> length)
    for byte in data[pos + 1 : pos + length]:
        value = (value << 8) | byte
    return value, pos + length


def _sniff_ebml(head: bytes) -> Container | None:
    size = _read_vint(head, 4)
    if size is None:
        return None
    header_size, pos = size
    end = min(pos + header_size, len(head))
    while pos < end:
        element = _read_vint(head, pos, keep_marker=True)
        if element is None:
            return None
        element_id, pos = element
        length = _read_vint(head, pos)
        if length is None:
            return None
        value_size, pos = length
        if element_id == 0x4282:  # DocType
            doctype = head[pos : pos + value_size].rstrip(b"\x00")
            return {b"webm": WEBM, b"matroska": MATROSKA}.get(doctype)
        pos += value_size
    return None


def _strided_sync(head: bytes, offset: int, stride: int) -> bool:
    packets = min(_TS_PACKETS, (len(head) - offset) // stride)
    return packets >= 3 and all(head[offset + i * stride] == 0x47 for i in range(packets))


def _text(head: bytes) -> bytes:
    """The head as UTF-8-ish bytes without BOM or leading whitespace (UTF-16 playlists decoded)."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        head = head.decode("utf-16", errors="ignore").encode("utf-8", errors="ignore")
    return head.removeprefix(b"\xef\xbb\xbf").lstrip()


def _sniff_playlist(head: bytes) -> Container | None:
    text = _text(head[:65536])
    lowered = text[:64].lower()
    if text.startswith(b"#EXTM3U") or (b"#EXT-X-" in text[:4096] and text.startswith(b"#")):
        return HLS
    if lowered.startswith(b"ffconcat version"):
        return FFCONCAT
    if lowered.startswith(b"[playlist]"):
        return PLS
    if text.startswith(b"v=0") and re.search(rb"^m=(?:video|audio|application) ", text[:4096], re.MULTILINE):
        return SDP
    if text.startswith(b"<"):
        pos = 0
        while match := _XML_SKIP.match(text, pos):
            if match.end() == pos:
                break
            pos = match.end()
        root = _XML_ROOT.match(text, pos)
        if root is not None:
            return _XML_PLAYLIST_ROOTS.get(root.group(1).decode("ascii", errors="ignore").lower())
    return None


@hookimpl
def careshare_identify(head: bytes) -> Identification | None:
    """Videos (MP4/MOV, WebM/Matroska, AVI, MPEG-TS ...) and the playlists that pose as them, by their bytes."""
    found = sniff(head)
    if found is None:
        return None
    return Identification(kind=KIND, media_type=found.media_type)


# -- opening and probing ----------------------------------------------------------------------------


class ExternalReferenceRefused(Exception):
    """A demuxer tried to open something other than the uploaded file (a playlist entry, a data reference)."""


def _refuse_nested_open(url: str, flags: int, options: dict[str, str]) -> Any:
    # Every open beyond the upload itself ends here; the URL is not logged (it may name a patient's file).
    raise ExternalReferenceRefused("careshare reads only the uploaded file")


@contextlib.contextmanager
def open_media(path: Path, demuxer: str) -> Iterator[InputContainer]:
    """Open ``path`` for reading with the ``demuxer`` forced and no way to open anything else.

    FFmpeg gets a Python file object (no URL, so no protocol is involved) and an ``io_open``
    callback that refuses every further open; ``protocol_whitelist=file`` and a
    ``format_whitelist`` of the forced demuxer stay as a second line, and QuickTime data
    references (``enable_drefs``) stay off.
    """
    options = {"protocol_whitelist": "file", "format_whitelist": demuxer}
    if demuxer == "mov":
        options |= {"enable_drefs": "0", "use_absolute_path": "0"}
    with (
        open(path, "rb") as fp,
        av.open(
            fp,
            mode="r",
            format=demuxer,
            container_options=options,
            metadata_errors="replace",
            io_open=_refuse_nested_open,
        ) as media,
    ):
        yield media


@attrs.frozen
class Probe:
    """What the container says about an upload, before anything is decoded."""

    video: VideoStream
    videos: tuple[VideoStream, ...]
    audios: tuple[Stream, ...]
    duration: float | None
    width: int
    height: int
    frame_rate: float | None
    bit_rate: int | None


def codec_name(stream: Stream) -> str:
    """The codec's own name (``av1``), not the decoder's (``libdav1d``); the stream type when unknown."""
    context = stream.codec_context
    if context is None or context.codec is None:
        return str(stream.type)
    return str(context.codec.canonical_name)


def _is_picture(stream: Stream) -> bool:
    disposition = int(stream.disposition)
    return bool(disposition & (int(av.stream.Disposition.attached_pic) | int(av.stream.Disposition.timed_thumbnails)))


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def probe(media: InputContainer, policy: Policy) -> Probe:
    """The main video stream and the facts about it; refuses files without a picture or over the caps."""
    videos = tuple(s for s in media.streams.video if not _is_picture(s))
    if not videos:
        raise Problem(VIDEO_NO_VIDEO_STREAM)
    for stream in videos:
        width, height = _size(stream)
        if width * height > policy.section(VideoOptions).max_pixels:
            raise _too_many_pixels(width, height, policy)
    video = max(videos, key=lambda s: (bool(int(s.disposition) & 1), _size(s)[0] * _size(s)[1]))
    duration = media.duration / av.time_base if media.duration and media.duration > 0 else None
    if duration is None:
        duration = _seconds(video.duration, video.time_base)
    if duration is not None and duration > policy.section(VideoOptions).max_seconds:
        raise _too_long(duration, policy)
    rate = video.average_rate
    if rate and video.time_base and rate == 1 / video.time_base:
        rate = None  # Matroska without frame durations reports its time base (1000/s), not a frame rate.
    return Probe(
        video=video,
        videos=videos,
        audios=tuple(media.streams.audio),
        duration=duration,
        width=_size(video)[0],
        height=_size(video)[1],
        frame_rate=round(float(rate), 3) if rate else None,
        bit_rate=media.bit_rate or None,
    )


def _size(stream: VideoStream) -> tuple[int, int]:
    context = stream.codec_context
    return (context.width, context.height) if context is not None else (0, 0)


def _too_many_pixels(width: int, height: int, policy: Policy) -> Problem:
    limit = policy.section(VideoOptions).max_pixels
    detail = PIXELS_DETAIL.format(width=width, height=height, limit=f"{limit:,}")
    return Problem(VIDEO_TOO_LARGE, detail, limit=limit, pixels=width * height)


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _too_long(seconds: float, policy: Policy) -> Problem:
    limit = policy.section(VideoOptions).max_seconds
    detail = DURATION_DETAIL.format(actual=_clock(seconds), limit=_clock(limit))
    return Problem(VIDEO_TOO_LARGE, detail, limit_seconds=limit, seconds=round(seconds, 3))


# -- poster -----------------------------------------------------------------------------------------

#: Packets decoded at most while looking for a poster from one seek point (the time limit still applies).
POSTER_PACKET_BUDGET = 900
#: Where the poster is taken, as a share of the duration; the fallback when that frame is blank.
POSTER_AT = 0.10
POSTER_FALLBACK_AT = 0.50


def _blankness(frame: VideoFrame) -> tuple[bool, float]:
    """(blank, contrast): a frame that is black or one flat colour says nothing as a poster."""
    small = frame.reformat(width=64, height=36, format="gray").to_ndarray()
    low, high = np.percentile(small, (1, 99))
    contrast = float(high - low)
    return bool(high < 40 or contrast < 8), contrast


def _frame_seconds(frame: VideoFrame, stream: VideoStream) -> float | None:
    if frame.pts is None:
        return None
    return _seconds(frame.pts, frame.time_base or stream.time_base)


def _decode_from(
    media: InputContainer, stream: VideoStream, seek_to: float | None, target: float | None
) -> tuple[VideoFrame | None, tuple[float, VideoFrame] | None]:
    """Seek to the keyframe before ``seek_to`` and decode forward: (poster, (contrast, best frame seen)).

    The first frame decoded (the keyframe) is taken when it is not blank and lies past half the
    way to ``target``, so a usual group of pictures costs one decoded frame; a keyframe further
    back (the first frame of a clip with a single keyframe) is decoded forward to ``target``,
    then on to the first frame that is not blank.
    """
    if seek_to is not None and stream.time_base:
        with contextlib.suppress(av.error.FFmpegError):
            media.seek(int(seek_to / stream.time_base), stream=stream, backward=True, any_frame=False)
    best: tuple[float, VideoFrame] | None = None
    first = True
    for packets, packet in enumerate(media.demux(stream), 1):
        if packets > POSTER_PACKET_BUDGET:
            break
        for frame in packet.decode():
            blank, contrast = _blankness(frame)
            if best is None or contrast > best[0]:
                best = (contrast, frame)
            at = _frame_seconds(frame, stream)
            goal = None if target is None or at is None else (target / 2 if first else target)
            first = False
            if not blank and (goal is None or at is None or at >= goal):
                return frame, best
    return None, best


def poster_frame(media: InputContainer, found: Probe) -> VideoFrame:
    """A frame about 10 % into the video that is not black; refuses streams that decode to nothing.

    Tries, in order: the keyframe before the 10 % point; the start of the file decoded forward to
    that point (files without a seek index land between keyframes); the 50 % point. Every frame
    seen counts, and the one with the most contrast is the poster when all of them are blank.
    """
    stream, duration = found.video, found.duration
    start = _seconds(stream.start_time, stream.time_base) or 0.0
    target = start + duration * POSTER_AT if duration else None
    attempts = [(target, target), (start, target)] if target else [(None, None)]
    if duration:
        attempts.append((start + duration * POSTER_FALLBACK_AT, start + duration * POSTER_FALLBACK_AT))
    best: tuple[float, VideoFrame] | None = None
    for seek_to, goal in attempts:
        frame, seen = _decode_from(media, stream, seek_to, goal)
        if frame is not None:
            return frame
        if seen is not None and (best is None or seen[0] > best[0]):
            best = seen
    if best is None:
        raise Problem(VIDEO_UNREADABLE)
    return best[1]


def _poster_image(frame: VideoFrame, policy: Policy) -> Image.Image:
    image = frame.to_image()
    rotation = getattr(frame, "rotation", 0) or 0
    if rotation % 360:
        # The display matrix turns counter-clockwise by ``rotation`` degrees; PIL rotates that way too.
        image = image.rotate(rotation, expand=True)
    if max(image.size) > policy.max_long_edge:
        image.thumbnail((policy.max_long_edge, policy.max_long_edge), Image.Resampling.LANCZOS)
    return image


# -- the shareable remux ----------------------------------------------------------------------------

# Keys FFmpeg's own muxers write or derive: technical, never about the person or the device.
_TECHNICAL_KEYS = frozenset(
    (
        "major_brand",
        "minor_version",
        "compatible_brands",
        "handler_name",
        "vendor_id",
        "language",
        "encoder",
        "duration",
    )
)
_LOCATION = re.compile(r"location|xyz|gps|iso6709", re.IGNORECASE)
_DEVICE = re.compile(r"make|model|software|com\.android\.version|serial|lens|device", re.IGNORECASE)
_LOOKAHEAD_PACKETS = 120
# Sample entry tags that matter to players (Apple plays HEVC only as hvc1; Dolby Vision as dvh1).
_KEPT_TAGS = frozenset(("avc1", "avc3", "hvc1", "hev1", "dvh1", "dvhe", "av01", "vp09"))


def _all_metadata(media: InputContainer) -> list[tuple[str, str]]:
    items = list(media.metadata.items())
    for stream in media.streams:
        items.extend(stream.metadata.items())
    return items


def top_level_boxes(path: Path, limit: int = 64) -> list[str]:
    """The types of the first top-level ISO BMFF boxes (atoms) of ``path``, in order."""
    types: list[str] = []
    with open(path, "rb") as fp:
        size_left = fp.seek(0, 2)
        offset = 0
        while len(types) < limit and size_left - offset >= 8:
            fp.seek(offset)
            size, kind = struct.unpack(">I4s", fp.read(8))
            if size == 1:
                extended = fp.read(8)
                if len(extended) < 8:
                    break
                size = struct.unpack(">Q", extended)[0]
            elif size == 0:
                size = size_left - offset
            if size < 8:
                break
            types.append(kind.decode("latin-1"))
            offset += size
    return types


def _moov_first(path: Path) -> bool:
    boxes = top_level_boxes(path)
    if "moov" not in boxes:
        return False
    return "mdat" not in boxes or boxes.index("moov") < boxes.index("mdat")


def _fix_dts(packet: Packet, shift: int, last_dts: dict[int, int]) -> None:
    """Shift DTS back by the stream's reordering delay; repair what is still broken like ffmpeg does."""
    index = packet.stream.index
    if packet.dts is not None and shift:
        packet.dts -= shift
    if packet.pts is not None and packet.dts is not None and packet.dts > packet.pts:
        floor = last_dts.get(index, packet.dts) + 1
        packet.pts = packet.dts = sorted((packet.pts, packet.dts, floor))[1]
    if packet.dts is not None:
        last_dts[index] = packet.dts


#: Bytes of ``moov`` one packet can take at most: its size (stsz), duration (stts), composition
#: offset (ctts), sync and dependency flags (stss, sdtp), chunk offset and chunk map (co64, stsc)
#: and sample group (sbgp) entries, each counted as if no two packets shared an entry. FFmpeg
#: writes about 6 bytes a packet for phone footage.
MOOV_BYTES_PER_PACKET = 64
#: Bytes of ``moov`` a track takes beyond its packets and its codec's extradata (tkhd, mdhd, hdlr,
#: stsd, edts ...), and the movie's own header.
MOOV_BYTES_PER_TRACK = 4096
MOOV_BYTES_FIXED = 4096
#: The space kept for ``moov`` is at most this share of the upload; above it the copy is written
#: with ``+faststart`` (for short clips the space would be a large share of the file, and the
#: second pass that faststart makes is cheap on them).
MOOV_RESERVE_SHARE = 0.01
#: Muxed bytes between two requests to the kernel to start writing the copy to disk.
WRITEBACK_EVERY = 64 * 1024 * 1024


def moov_reservation(media: InputContainer, keep: list[int], budget: int) -> int | None:
    """Bytes to keep for ``moov`` at the start of an MP4/MOV copy of the ``keep`` tracks, or None.

    ``+faststart`` writes the whole file with ``moov`` at the end, then moves every byte of
    ``mdat`` forward to put ``moov`` first: a second read and write of the whole copy. With the
    mov muxer's ``moov_size`` the space is kept after ``ftyp`` instead, so the copy is written
    once. The bound follows from the packet counts of the tracks' sample tables; None (use
    faststart) when a track does not give its count (fragmented MP4) or the bound is over
    ``budget``. A bound that proves too small is caught when the copy is closed
    (:func:`remux_streamable` then writes it again with faststart).
    """
    total = MOOV_BYTES_FIXED
    for index in keep:
        stream = media.streams[index]
        if not stream.frames or stream.frames <= 0:
            return None
        extradata = stream.codec_context.extradata_size if stream.codec_context is not None else 0
        total += MOOV_BYTES_PER_TRACK + extradata + MOOV_BYTES_PER_PACKET * stream.frames
    return total if total <= budget else None


class _MoovReservationTooSmall(Exception):
    """The muxer found ``moov`` larger than the space kept for it when closing the copy (the copy is unusable)."""


def remux_streamable(
    source: Path,
    container: Container,
    keep: list[int],
    dst: Path,
    muxer: str,
    policy: Policy,
    moov_reserve: int | None = None,
) -> tuple[dict[int, int], bool]:
    """Remux into ``dst`` with ``moov`` first: in ``moov_reserve`` bytes kept for it, else by faststart.

    Returns the packets copied per track and whether the reservation was used. One that proves
    too small costs a second remux, with ``+faststart``.
    """
    if moov_reserve is not None and moov_reserve > 0 and muxer in ("mp4", "mov"):
        try:
            return _remux(source, container, keep, dst, muxer, policy, moov_reserve), True
        except _MoovReservationTooSmall:
            logger.warning("moov did not fit the space kept for it reserved=%s: remuxing with faststart", moov_reserve)
            dst.unlink(missing_ok=True)
    return _remux(source, container, keep, dst, muxer, policy), False


class _Writeback:
    """Starts the kernel writing the copy to disk while it is muxed, so that storing it durably finds little left to write."""

    def __init__(self, path: Path, every: int = WRITEBACK_EVERY) -> None:
        self.path, self.every, self.pending, self.fd = path, every, 0, -1

    def add(self, size: int) -> None:
        self.pending += size
        if self.pending < self.every:
            return
        self.pending = 0
        if self.fd < 0:
            try:
                self.fd = os.open(self.path, os.O_RDONLY)
            except OSError:  # not there yet: the muxer creates it with its first write
                return
        start_writeback(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _remux(
    source: Path,
    container: Container,
    keep: list[int],
    dst: Path,
    muxer: str,
    policy: Policy,
    moov_reserve: int | None = None,
) -> dict[int, int]:
    """Copy the ``keep`` tracks' packets into ``dst`` with no metadata; returns packets copied per track."""
    assert container.demuxer is not None
    options = {"fflags": "+bitexact"}
    if muxer in ("mp4", "mov"):
        if moov_reserve is not None and moov_reserve > 0:  # moov_size 0 would put moov at the end
            options["moov_size"] = str(moov_reserve)
        else:
            options["movflags"] = "+faststart"
    else:
        options["cues_to_front"] = "1"
    writeback = _Writeback(dst)
    counts: dict[int, int] | None = None
    try:
        with (
            open_media(source, container.demuxer) as media,
            av.open(dst, "w", format=muxer, container_options=options) as out,
        ):
            counts = _copy_tracks(media, out, keep, muxer, policy, writeback)
    except av.error.FFmpegError:
        if moov_reserve is not None and counts is not None:
            # Every packet went in and closing (writing moov) failed: it did not fit the space kept.
            raise _MoovReservationTooSmall from None
        raise
    finally:
        writeback.close()
    assert counts is not None
    return counts


def _copy_tracks(
    media: InputContainer, out: Any, keep: list[int], muxer: str, policy: Policy, writeback: _Writeback
) -> dict[int, int]:
    counts = dict.fromkeys(keep, 0)
    inputs = [media.streams[i] for i in keep]
    outputs = {}
    for stream in inputs:
        try:
            copy = out.add_stream_from_template(stream, opaque=True)
        except av.error.FFmpegError:
            raise
        except ValueError as exc:  # "format does not support codec"
            raise _MuxerRefused(str(exc)) from None
        tag = stream.codec_context.codec_tag
        if muxer in ("mp4", "mov") and tag in _KEPT_TAGS:
            copy.codec_context.codec_tag = tag
        copy.metadata.clear()
        outputs[stream.index] = copy
    out.metadata.clear()
    lookahead: list[Packet] = []
    shifts: dict[int, int] | None = None
    last_dts: dict[int, int] = {}
    for packet in media.demux(inputs):
        if packet.dts is None and packet.pts is None:
            continue
        _check_time(packet, policy)
        if shifts is None:
            lookahead.append(packet)
            if len(lookahead) < _LOOKAHEAD_PACKETS:
                continue
            shifts = _dts_shifts(lookahead)
            pending, lookahead = lookahead, []
        else:
            pending = [packet]
        for item in pending:
            _copy_packet(out, item, outputs, shifts, last_dts, counts, writeback)
    if shifts is None:
        shifts = _dts_shifts(lookahead)
        for item in lookahead:
            _copy_packet(out, item, outputs, shifts, last_dts, counts, writeback)
    return counts


def _copy_packet(
    out: Any,
    packet: Packet,
    outputs: dict[int, Stream],
    shifts: dict[int, int],
    last_dts: dict[int, int],
    counts: dict[int, int],
    writeback: _Writeback,
) -> None:
    index = packet.stream.index
    _fix_dts(packet, shifts.get(index, 0), last_dts)
    packet.stream = outputs[index]
    size = packet.size  # muxing hands the packet's data over
    out.mux(packet)
    counts[index] += 1
    writeback.add(size)


def _dts_shifts(packets: list[Packet]) -> dict[int, int]:
    shifts: dict[int, int] = {}
    for packet in packets:
        if packet.pts is not None and packet.dts is not None and packet.dts > packet.pts:
            index = packet.stream.index
            shifts[index] = max(shifts.get(index, 0), packet.dts - packet.pts)
    return shifts


def _check_time(packet: Packet, policy: Policy) -> None:
    # A file whose header gives no duration is measured while it is copied (from its track's start).
    stamp = packet.pts if packet.pts is not None else packet.dts
    start = packet.stream.start_time or 0
    at = _seconds(stamp - start if stamp is not None else None, packet.time_base)
    if at is not None and at > policy.section(VideoOptions).max_seconds:
        raise _too_long(at, policy)


def _verify_shareable(path: Path, muxer: str, expected_codecs: list[str], private_values: list[str]) -> None:
    """Reopen the copy: same tracks, no personal metadata, ``moov`` first; a failure is a handler bug."""
    demuxer = "mov" if muxer in ("mp4", "mov") else "matroska"
    with open_media(path, demuxer) as media:
        codecs = [codec_name(s) for s in media.streams]
        if codecs != expected_codecs:
            raise RuntimeError(f"shareable copy has tracks {codecs}, expected {expected_codecs}")
        left = [k for k, _ in _all_metadata(media) if k.lower() not in _TECHNICAL_KEYS]
        if left:
            raise RuntimeError(f"shareable copy still holds metadata keys {left}")
    if demuxer == "mov" and not _moov_first(path):
        raise RuntimeError("shareable copy does not start with its moov atom")
    if private_values and path.stat().st_size:
        with open(path, "rb") as fp, mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if any(data.find(value.encode()) >= 0 for value in private_values):
                raise RuntimeError("shareable copy still holds a location or device value")


class _MuxerRefused(Exception):
    """The muxer cannot hold one of the tracks (for example PCM sound in MP4): try the next one."""


def _write_shareable(
    source: Path, container: Container, media: InputContainer, found: Probe, workdir: Path, policy: Policy
) -> tuple[RenditionOutput, dict[int, int]]:
    keep = [s.index for s in (*found.videos, *found.audios)]
    codecs = [codec_name(media.streams[i]) for i in keep]
    private = [v for k, v in _all_metadata(media) if (_LOCATION.search(k) or _DEVICE.search(k)) and len(v.strip()) >= 4]
    reserve = moov_reservation(media, keep, int(source.stat().st_size * MOOV_RESERVE_SHARE))
    for muxer in container.muxers:
        dst = workdir / f"shareable.{_EXTENSIONS[muxer]}"
        try:
            counts, _ = remux_streamable(source, container, keep, dst, muxer, policy, reserve)
        except _MuxerRefused:
            dst.unlink(missing_ok=True)
            continue
        _verify_shareable(dst, muxer, codecs, private)
        return RenditionOutput(role="shareable", media_type=_MUXER_MEDIA_TYPES[muxer], path=dst), counts
    raise Problem(VIDEO_UNREADABLE, CODEC_DETAIL)


_EXTENSIONS = {"mp4": "mp4", "mov": "mov", "webm": "webm", "matroska": "mkv"}
_MUXER_MEDIA_TYPES = {
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "webm": "video/webm",
    "matroska": "video/x-matroska",
}
_MOBILE_VIDEO = frozenset(("h264", "hevc"))
_MOBILE_AUDIO = frozenset(("aac",))


# -- the hook ---------------------------------------------------------------------------------------


def _head(path: Path) -> bytes:
    with open(path, "rb") as fp:
        return fp.read(65536)


@hookimpl
def careshare_process(source: Source, kind: str, policy: Policy) -> Processed | None:
    """Probe, poster and a metadata-free, streamable remux; refusals name what the person can do."""
    if kind != KIND:
        return None
    # Decide again from the bytes themselves: the stored media type is not trusted to pick a demuxer.
    container = sniff(_head(source.path))
    if container is None:
        raise Problem(VIDEO_UNREADABLE)
    if container.playlist:
        raise Problem(VIDEO_UNREADABLE, PLAYLIST_DETAIL)
    if container.demuxer is None:
        raise Problem(VIDEO_FORMAT_UNSUPPORTED, FORMAT_DETAIL.format(label=container.label), format=container.name)
    try:
        return _process(source, container, policy)
    except av.error.FFmpegError:
        # Bytes FFmpeg could not demux or decode; the details stay in the log, not in the answer.
        raise Problem(VIDEO_UNREADABLE) from None
    except ExternalReferenceRefused:
        raise Problem(VIDEO_UNREADABLE, REFERENCE_DETAIL) from None
    except (UnicodeError, OverflowError, EOFError):
        raise Problem(VIDEO_UNREADABLE) from None


def _process(source: Source, container: Container, policy: Policy) -> Processed:
    with open_media(source.path, container.demuxer or "") as media:
        found = probe(media, policy)
        if not container.muxers:
            raise Problem(VIDEO_FORMAT_UNSUPPORTED, FORMAT_DETAIL.format(label=container.label), format=container.name)
        context = found.video.codec_context
        if context is None or context.codec is None or not context.codec.is_decoder:
            raise Problem(VIDEO_UNREADABLE, CODEC_DETAIL)
        frame = poster_frame(media, found)
        if frame.width * frame.height > policy.section(VideoOptions).max_pixels:
            raise _too_many_pixels(frame.width, frame.height, policy)
        image = _poster_image(frame, policy)
        poster_seconds = _frame_seconds(frame, found.video)
        rotation = int(getattr(frame, "rotation", 0) or 0) % 360
        metadata_items = _all_metadata(media)
        dropped = len(media.streams) - len(found.videos) - len(found.audios)
        shareable, counts = _write_shareable(source.path, container, media, found, source.workdir, policy)
        video_codec = codec_name(found.video)
        video_codecs = {codec_name(s) for s in found.videos}
        audio_codecs = [codec_name(s) for s in found.audios]
        video_packets = counts[found.video.index]
    poster = save_jpeg(image, source.workdir / "poster.jpg", role="poster", quality=policy.jpeg_quality)
    thumbnail = thumbnail_rendition(image, source.workdir, policy.thumbnail_size, policy.jpeg_quality)

    is_mov_family = container.demuxer == "mov"
    # Matroska puts its headers first: players start without reading to the end (the index is found by SeekHead).
    streamable = _moov_first(source.path) if is_mov_family else True
    had_location = any(_LOCATION.search(key) for key, _ in metadata_items)
    had_device = any(_DEVICE.search(key) for key, _ in metadata_items)
    changes = ["remuxed"]
    if any(key.lower() not in _TECHNICAL_KEYS for key, _ in metadata_items):
        changes.append("metadata-stripped")
    if had_location:
        changes.append("location-removed")
    if is_mov_family and not streamable:
        changes.append("moov-moved-to-front")
    if dropped:
        changes.append("tracks-dropped")
    frame_rate = found.frame_rate
    if frame_rate is None and found.duration:
        # No average rate in the header (Matroska without frame durations): count what was copied.
        frame_rate = round(video_packets / found.duration, 3)
    metadata: dict[str, Any] = {
        "container": container.name,
        "duration_seconds": round(found.duration, 3) if found.duration is not None else None,
        "width": frame.width,
        "height": frame.height,
        "rotation": rotation,
        "frame_rate": frame_rate,
        "video_codec": video_codec,
        "audio_codec": audio_codecs[0] if audio_codecs else None,
        "has_audio": bool(audio_codecs),
        "bit_rate": found.bit_rate,
        "streamable": streamable,
        "mobile_playable": shareable.media_type in ("video/mp4", "video/quicktime")
        and video_codecs <= _MOBILE_VIDEO
        and set(audio_codecs) <= _MOBILE_AUDIO,
        "had_location": had_location,
        "had_device_info": had_device,
        "poster_seconds": round(poster_seconds, 3) if poster_seconds is not None else None,
    }
    return Processed(
        handler=KIND,
        handler_version=HANDLER_VERSION,
        metadata=metadata,
        renditions=(shareable, poster, thumbnail),
        changes=tuple(changes),
    )
