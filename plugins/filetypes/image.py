"""Image handler: identify pictures by their bytes and make a clean, upright, sRGB copy for phones.

Pillow (plus pillow-heif for HEIC/HEIF) opens each file with its identified format only, so no other
Pillow decoder is reachable from an upload. Pixels are counted (all frames) before anything is
decoded; the ``shareable`` copy is written fresh from pixels, so no EXIF, GPS, XMP, IPTC, ICC
profile, comment, text chunk or data appended after the image survives.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import TYPE_CHECKING, Any

import attrs
import PIL
import pillow_heif
from PIL import Image, ImageCms, ImageFile

from careshare import hookimpl
from careshare.core.kinds import Kind
from careshare.core.models import Identification, Processed, RenditionOutput
from careshare.core.policy import Policy
from careshare.core.problems import Problem, ProblemType
from careshare.plugins.filetypes.imaging import (
    has_transparency,
    save_jpeg,
    save_png,
    thumbnail_rendition,
    to_display_mode,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from careshare.core.models import Source

__all__ = [
    "IMAGE_SVG_UNSUPPORTED",
    "IMAGE_TOO_LARGE",
    "IMAGE_UNREADABLE",
    "KIND",
    "MAX_EDGE",
    "MAX_FRAMES",
    "SMALL_ANIMATION_EDGE",
    "SMALL_ANIMATION_FRAMES",
    "ImageOptions",
    "careshare_identify",
    "careshare_kinds",
    "careshare_process",
    "identify_image",
]

KIND = "image"
# HEIF/HEIC through pillow-heif; its embedded thumbnails, depth and auxiliary images are never shared.
pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
HANDLER_VERSION = f"1 (Pillow {PIL.__version__}, pillow-heif {pillow_heif.__version__})"

#: No camera or encoder makes an edge longer than this (JPEG's own limit); longer is a broken header.
MAX_EDGE = 65_535
#: More frames or pages than this is not a picture a patient needs; refused before any is decoded.
MAX_FRAMES = 1_000
#: A "small" animation (kept animated when the policy says so): at most this many frames ...
SMALL_ANIMATION_FRAMES = 100
#: ... and a canvas whose longest edge is at most this (and within the policy's long-edge cap).
SMALL_ANIMATION_EDGE = 1024
# The head ``careshare_identify`` sees; process re-reads this much to decide the decoder itself.
_HEAD_BYTES = 64 * 1024

IMAGE_TOO_LARGE = ProblemType(
    "image-too-large",
    422,
    "Picture too large",
    "This picture is too large to share safely. Make it smaller (fewer pixels) and upload it again.",
)
IMAGE_UNREADABLE = ProblemType(
    "image-unreadable",
    422,
    "Picture could not be read",
    "This file looks like a picture but is damaged or incomplete, so it could not be opened."
    " Take or export the picture again and upload the new copy.",
)
IMAGE_SVG_UNSUPPORTED = ProblemType(
    "image-svg-unsupported",
    415,
    "SVG pictures not accepted",
    "SVG drawings can contain active content (scripts and links), so careshare does not share them."
    " Export the drawing as PNG or JPEG and upload that instead.",
)


def _too_many_pixels(limit: int) -> Problem:
    megapixels = f"{limit / 1_000_000:g}"
    return Problem(
        IMAGE_TOO_LARGE,
        f"This picture is too large to share safely (over {megapixels} megapixels, all frames counted)."
        " Resize it and upload it again.",
        limit_pixels=limit,
    )


def _too_many_frames() -> Problem:
    return Problem(
        IMAGE_TOO_LARGE,
        f"This picture has more than {MAX_FRAMES} frames or pages, too many to check safely."
        " Save the page or frame you need as a picture of its own and upload that.",
        limit_frames=MAX_FRAMES,
    )


def _hidden_data_bomb() -> Problem:
    return Problem(
        IMAGE_TOO_LARGE,
        "This picture carries far more hidden text data than a picture needs, so it was not opened."
        " Open it and save it again as a new picture (or take a screenshot), then upload that.",
    )


# -- identify ---------------------------------------------------------------------------------

JPEG, PNG, GIF, WEBP, AVIF, HEIC, HEIF, TIFF, BMP, SVG = (
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "image/avif",
    "image/heic",
    "image/heif",
    "image/tiff",
    "image/bmp",
    "image/svg+xml",
)
# media type -> (the one Pillow decoder allowed for it, the name clinicians see as "format").
_DECODERS: dict[str, tuple[str, str]] = {
    JPEG: ("JPEG", "JPEG"),
    PNG: ("PNG", "PNG"),
    GIF: ("GIF", "GIF"),
    WEBP: ("WEBP", "WebP"),
    AVIF: ("AVIF", "AVIF"),
    HEIC: ("HEIF", "HEIC"),
    HEIF: ("HEIF", "HEIF"),
    TIFF: ("TIFF", "TIFF"),
    BMP: ("BMP", "BMP"),
}

_HEVC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"})
_AV1_BRANDS = frozenset({b"avif", b"avis"})
_HEIF_BRANDS = frozenset({b"mif1", b"msf1"})
_IMAGE_BRANDS = _HEVC_BRANDS | _AV1_BRANDS | _HEIF_BRANDS
# Major brands of video files (the video handler's): never claimed, whatever they list as compatible.
_VIDEO_BRANDS = frozenset({b"isom", b"avc1", b"dash", b"qt  ", b"M4V ", b"M4VH", b"M4VP", b"mmp4", b"f4v ", b"MSNV"})
_VIDEO_BRAND_PREFIXES = (b"iso", b"mp4", b"mp7", b"3gp", b"3g2", b"3ge", b"3gg", b"3gs")
# BMP: "BM" alone is too weak a magic; the DIB header sizes Windows and OS/2 define make it firm.
_DIB_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})


def _iso_bmff_image(head: bytes) -> str | None:
    """The image media type of an ISO BMFF file (HEIC/HEIF/AVIF) from its ``ftyp`` brands, or None."""
    if head[4:8] != b"ftyp" or len(head) < 16:
        return None
    box_size = int.from_bytes(head[0:4], "big")
    end = min(box_size if box_size >= 16 else 16, len(head), 4096)
    major = head[8:12]
    brands = {major} | {head[i : i + 4] for i in range(16, end - 3, 4)}
    if major not in _IMAGE_BRANDS and (major in _VIDEO_BRANDS or major.startswith(_VIDEO_BRAND_PREFIXES)):
        return None
    if not brands & _IMAGE_BRANDS:
        return None
    if brands & _HEVC_BRANDS:
        return HEIC
    if brands & _AV1_BRANDS:
        return AVIF
    return HEIF


def _is_svg(head: bytes) -> bool:
    """Text that opens (after a BOM, whitespace, XML declaration, processing instructions, comments
    or a doctype) with an ``<svg`` element, or a doctype naming svg."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        head = head[: len(head) & ~1].decode("utf-16", "ignore").encode("utf-8", "ignore")
    text = head.removeprefix(b"\xef\xbb\xbf").lower()
    pos = 0
    while True:
        while pos < len(text) and text[pos] in b" \t\r\n\x0c":
            pos += 1
        if text.startswith(b"<?", pos):
            end = text.find(b"?>", pos + 2)
            closer = 2
        elif text.startswith(b"<!--", pos):
            end = text.find(b"-->", pos + 4)
            closer = 3
        elif text.startswith(b"<!doctype", pos):
            rest = text[pos + 9 : pos + 64].lstrip()
            if rest.startswith(b"svg") and rest[3:4] in (b"", b" ", b"\t", b"\r", b"\n", b">", b"["):
                return True
            end = text.find(b">", pos)
            closer = 1
        else:
            return text.startswith(b"<svg", pos) and text[pos + 4 : pos + 5] in (
                b" ",
                b"\t",
                b"\r",
                b"\n",
                b">",
                b"/",
                b":",
            )
        if end < 0:
            return False
        pos = end + closer


def identify_image(head: bytes) -> str | None:
    """The image media type ``head`` (a file's first bytes) declares by its magic numbers, or None."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return None  # DICOM's preamble may hold a TIFF header (dual-personality files): DICOM's to claim
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return WEBP
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return TIFF
    if head.startswith(b"BM") and len(head) >= 18 and int.from_bytes(head[14:18], "little") in _DIB_HEADER_SIZES:
        return BMP
    if head[4:8] == b"ftyp":
        return _iso_bmff_image(head)
    if _is_svg(head[:_HEAD_BYTES]):
        return SVG
    return None


@attrs.frozen
class ImageOptions:
    """The picture handler's section of the policy (``Policy.section(ImageOptions)``)."""

    #: Keep small animations (GIF, WebP, AVIF) animated rather than taking the first frame.
    keep_small_animations: bool = False


@hookimpl
def careshare_kinds() -> list[Kind]:
    return [Kind(KIND, "an image", options=ImageOptions)]


@hookimpl
def careshare_identify(head: bytes) -> Identification | None:
    media_type = identify_image(head)
    return None if media_type is None else Identification(kind=KIND, media_type=media_type)


# -- process ----------------------------------------------------------------------------------

# EXIF orientation -> the transpose that makes the picture upright (as ImageOps.exif_transpose does).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_IFD, _GPS_IFD, _ORIENTATION = 0x8769, 0x8825, 0x0112
# Pillow ``info`` keys that carry metadata (anything identifying or descriptive) rather than pixels.
_METADATA_KEYS = ("exif", "xmp", "XML:com.adobe.xmp", "icc_profile", "comment", "photoshop", "iptc", "metadata")
# TIFF tags that describe rather than encode: description, make, model, software, date, artist,
# copyright, XMP, IPTC, Photoshop, EXIF and GPS directories.
_TIFF_METADATA_TAGS = (270, 271, 272, 305, 306, 315, 33432, 700, 33723, 34377, _EXIF_IFD, _GPS_IFD)
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
_RESAMPLE = Image.Resampling.LANCZOS
# Box-reduce first when shrinking more than 3x, then Lanczos: the result is indistinguishable, much faster.
_REDUCING_GAP = 3.0


@contextlib.contextmanager
def _pillow_guards(max_pixels: int) -> Iterator[None]:
    """Pillow's own bomb check at the policy's cap (and as an error), truncated files never "loaded".

    These are Pillow globals: in the handler's own process (the normal case) nothing else shares
    them; they are restored afterwards for a caller running handlers in threads.
    """
    saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = max_pixels, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about odd EXIF and the like: not our business
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


@hookimpl
def careshare_process(source: Source, kind: str, policy: Policy) -> Processed | None:
    if kind != KIND:
        return None
    if not isinstance(policy, Policy):
        policy = Policy.from_mapping(policy, {KIND: ImageOptions})
    with source.path.open("rb") as fp:
        media_type = identify_image(fp.read(_HEAD_BYTES))
        if media_type == SVG:
            raise Problem(IMAGE_SVG_UNSUPPORTED)
        if media_type is None:
            raise Problem(IMAGE_UNREADABLE)
        fp.seek(0)
        with _pillow_guards(policy.max_image_pixels):
            return _normalise(fp, media_type, source.workdir, policy)


def _normalise(fp: io.BufferedReader, media_type: str, workdir: Path, policy: Policy) -> Processed:
    decoder, label = _DECODERS[media_type]
    picture = _Picture.open(fp, decoder, policy)
    render = _Renderer(picture, policy)
    changes: list[str] = []
    animate = (
        policy.section(ImageOptions).keep_small_animations
        and picture.frames > 1
        and decoder in ("GIF", "WEBP", "AVIF", "PNG")
        and picture.frames <= SMALL_ANIMATION_FRAMES
        and max(picture.size) <= min(SMALL_ANIMATION_EDGE, policy.max_long_edge)
    )
    first = render(picture.first)
    # Other frames are decoded too (a truncated or hostile later frame refuses the file), after the
    # first frame's copy is made, because seeking may reuse the first frame's pixels.
    others = [render(frame) for frame in picture.other_frames(keep=animate)]
    if picture.frames > 1 and not animate:
        changes.append("first-frame-only")

    if animate:
        shareable = _save_animation(first, others, picture.durations, picture.loop, decoder, workdir)
    elif has_transparency(first) or picture.palette_source:
        # Transparency needs PNG; palette and bilevel pictures (diagrams, scans, GIFs) stay sharp in PNG.
        shareable = save_png(first, workdir / "shareable.png", role="shareable")
    else:
        shareable = save_jpeg(first, workdir / "shareable.jpg", role="shareable", quality=policy.jpeg_quality)
    thumbnail = thumbnail_rendition(first, workdir, policy.thumbnail_size, policy.jpeg_quality)

    if render.transpose is not None or picture.oriented_by_decoder:
        changes.append("orientation-applied")
    if picture.had_metadata:
        changes.append("metadata-stripped")
    if render.converted:
        changes.append("converted-to-srgb")
    if first.size != render.upright(picture.size):
        changes.append("resized")
    width, height = render.upright(picture.size)
    metadata: dict[str, Any] = {
        "width": width,
        "height": height,
        "format": label,
        "frames": picture.frames,
        "had_exif": picture.had_exif,
        "had_gps": picture.had_gps,
    }
    if animate:
        metadata["animated"] = True
    return Processed(
        handler=KIND,
        handler_version=HANDLER_VERSION,
        metadata=metadata,
        renditions=(shareable, thumbnail),
        changes=tuple(changes),
    )


class _Picture:
    """An opened image whose size and frame count passed the caps, its first frame decoded."""

    def __init__(self, image: ImageFile.ImageFile, policy: Policy) -> None:
        self.image = image
        self.policy = policy
        self.size: tuple[int, int] = image.size
        self.frames: int = 1
        self.first: Image.Image = image
        self.start = 0
        self.durations: list[int] = []
        self.loop = 0
        self.palette_source = image.mode in ("P", "PA", "1")
        self.had_exif = self.had_gps = self.had_metadata = False
        self.orientation = 1
        self.oriented_by_decoder = False
        self.tiff_orientation: Any = None
        self.icc: bytes | None = None

    @classmethod
    def open(cls, fp: io.BufferedReader, decoder: str, policy: Policy) -> _Picture:
        limit = policy.max_image_pixels
        try:
            image = Image.open(fp, formats=[decoder])
            picture = cls(image, policy)
            width, height = image.size
            if width <= 0 or height <= 0:
                raise Problem(IMAGE_UNREADABLE)
            picture.frames = int(getattr(image, "n_frames", 1))
            if picture.frames > MAX_FRAMES:
                raise _too_many_frames()
            # Frames of GIF, WebP, AVIF and APNG share the canvas; other frames are checked again on load.
            if width * height * picture.frames > limit:
                raise _too_many_pixels(limit)
            if max(width, height) > MAX_EDGE:
                raise Problem(IMAGE_UNREADABLE)
            picture.tiff_orientation = getattr(image, "tag_v2", {}).get(_ORIENTATION)
            picture.start = image.tell()  # HEIF opens at its primary image, which need not be the first
            picture.first = picture._load_first(decoder)
            picture._read_metadata(decoder)
        except Problem:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _too_many_pixels(limit) from None
        except ValueError as exc:
            if "MAX_TEXT" in str(exc):  # a PNG text chunk that inflates without end
                raise _hidden_data_bomb() from None
            raise Problem(IMAGE_UNREADABLE) from None
        except MemoryError:
            raise
        except Exception:  # any decoder failure on hostile or damaged bytes
            raise Problem(IMAGE_UNREADABLE) from None
        return picture

    def _load_first(self, decoder: str) -> Image.Image:
        image = self.image
        if decoder == "JPEG":
            # Let libjpeg scale down by 1/2, 1/4 or 1/8 while decoding: never below the shareable size.
            target = _fit(image.size, self.policy.max_long_edge)
            if target != image.size:
                image.draft(None, target)
        image.load()
        self.durations.append(int(image.info.get("duration") or 100))
        self.loop = int(image.info.get("loop") or 0)
        if self.frames > 1:
            return image.copy()
        return image

    def _read_metadata(self, decoder: str) -> None:
        image, info = self.image, self.image.info
        try:
            exif = image.getexif()
        except Exception:  # unreadable EXIF: nothing to honour, and it is stripped anyway
            exif = Image.Exif()
        orientation = exif.get(_ORIENTATION, 1)
        self.orientation = orientation if orientation in _UPRIGHT else 1
        # libheif (HEIC) and Pillow's TIFF reader turn the picture upright while decoding and drop the tag.
        if decoder == "HEIF":
            self.oriented_by_decoder = info.get("original_orientation") in _UPRIGHT
        elif decoder == "TIFF":
            self.oriented_by_decoder = self.tiff_orientation in _UPRIGHT
        if decoder == "TIFF":
            self.had_exif = _EXIF_IFD in exif or _GPS_IFD in exif
            tags = getattr(image, "tag_v2", {})
            self.had_metadata = any(tag in tags for tag in _TIFF_METADATA_TAGS)
        else:
            self.had_exif = bool(info.get("exif"))
            self.had_metadata = any(info.get(key) for key in _METADATA_KEYS)
        try:
            self.had_gps = _GPS_IFD in exif or bool(exif.get_ifd(_GPS_IFD))
        except Exception:
            self.had_gps = _GPS_IFD in exif
        if decoder == "JPEG":
            # Any APPn segment beyond JFIF (APP0) and Adobe's colour transform flag (APP14), or a comment.
            segments = getattr(image, "applist", [])
            self.had_metadata |= any(marker not in ("APP0", "APP14") for marker, _ in segments)
        if decoder == "PNG":
            self.had_metadata |= bool(getattr(image, "text", None))
        if decoder == "TIFF" and image.info.get("icc_profile"):
            self.had_metadata = True
        self.had_metadata |= self.had_exif
        icc = info.get("icc_profile")
        self.icc = icc if isinstance(icc, bytes) and icc else None

    def other_frames(self, *, keep: bool) -> Iterator[Image.Image]:
        """Decode every frame but the first (all count towards the pixel cap); yields them if ``keep``."""
        if self.frames == 1:
            return
        image, limit = self.image, self.policy.max_image_pixels
        total = self.size[0] * self.size[1]
        try:
            for index in range(self.frames):
                if index == self.start:
                    continue
                image.seek(index)
                width, height = image.size
                total += width * height
                if total > limit:
                    raise _too_many_pixels(limit)
                if width <= 0 or height <= 0 or max(width, height) > MAX_EDGE:
                    raise Problem(IMAGE_UNREADABLE)
                if not keep and getattr(image, "format", None) == "MPO":
                    image.draft(None, (1, 1))  # only checked: decode at 1/8 scale
                image.load()
                if keep:
                    self.durations.append(int(image.info.get("duration") or 100))
                    yield image.copy()
        except Problem:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _too_many_pixels(limit) from None
        except MemoryError:
            raise
        except Exception:
            raise Problem(IMAGE_UNREADABLE) from None


class _Renderer:
    """Turns a decoded frame into the shareable picture: display mode, size cap, sRGB, upright."""

    def __init__(self, picture: _Picture, policy: Policy) -> None:
        self.target = _fit(picture.size, policy.max_long_edge)
        self.orientation = picture.orientation
        self.transpose = _UPRIGHT.get(picture.orientation)
        self.icc = None if picture.icc is None or _is_srgb(picture.icc) else picture.icc
        self.converted = False
        self._transforms: dict[str, Any] = {}

    def upright(self, size: tuple[int, int]) -> tuple[int, int]:
        """``size`` as it is once the picture stands upright (orientations 5 to 8 swap the edges)."""
        return (size[1], size[0]) if self.orientation >= 5 else size

    def __call__(self, frame: Image.Image) -> Image.Image:
        if frame.mode not in ("RGB", "RGBA", "L", "LA", "CMYK"):
            frame = to_display_mode(frame)
        if frame.size != self.target:
            frame = frame.resize(self.target, _RESAMPLE, reducing_gap=_REDUCING_GAP)
        frame = self._to_srgb(frame)
        if frame.mode not in ("RGB", "RGBA", "L", "LA"):
            self.converted = True  # CMYK without a profile: Pillow's plain conversion
            frame = to_display_mode(frame)
        if self.transpose is not None:
            frame = frame.transpose(self.transpose)
        frame.info = {}  # nothing from the source's info (ICC, comments, EXIF) may reach a writer
        return frame

    def _to_srgb(self, frame: Image.Image) -> Image.Image:
        if self.icc is None or frame.mode not in ("RGB", "RGBA", "CMYK"):
            return frame  # no profile (sRGB assumed) or grey levels (a grey profile's curve is left as is)
        out_mode = "RGBA" if frame.mode == "RGBA" else "RGB"
        transform = self._transforms.get(frame.mode)
        if transform is None:
            try:
                profile = ImageCms.ImageCmsProfile(io.BytesIO(self.icc))
                transform = ImageCms.buildTransform(
                    profile, _SRGB, frame.mode, out_mode, ImageCms.Intent.PERCEPTUAL, ImageCms.Flags.NONE
                )
            except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
                transform = False  # a broken profile, or one for another colour space: treat as sRGB
            self._transforms[frame.mode] = transform
        if transform is False:
            return frame
        self.converted = True
        return ImageCms.applyTransform(frame, transform)


def _fit(size: tuple[int, int], long_edge: int) -> tuple[int, int]:
    """``size`` scaled down (never up) so its longest edge is at most ``long_edge``."""
    width, height = size
    scale = long_edge / max(width, height)
    if scale >= 1:
        return size
    return max(1, round(width * scale)), max(1, round(height * scale))


def _is_srgb(icc: bytes) -> bool:
    try:
        description = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return True  # unreadable: nothing to honour
    return "srgb" in description.lower()


def _save_animation(
    first: Image.Image, others: list[Image.Image], durations: list[int], loop: int, decoder: str, workdir: Path
) -> RenditionOutput:
    """A kept small animation: GIF stays GIF, WebP/AVIF/APNG become animated WebP (phones play both)."""
    if decoder == "GIF":
        path, fmt, media_type = workdir / "shareable.gif", "GIF", GIF
        options: dict[str, Any] = {"disposal": 2}
    else:
        path, fmt, media_type = workdir / "shareable.webp", "WEBP", WEBP
        options = {"quality": 80}
    first.save(path, fmt, save_all=True, append_images=others, duration=durations, loop=loop, **options)
    return RenditionOutput(role="shareable", media_type=media_type, path=path)
