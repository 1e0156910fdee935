"""DICOM handler: render one frame to an 8-bit PNG (never share the .dcm), keep only technical metadata.

The pipeline follows PS3.3 C.11 (modality LUT, VOI LUT or window, MONOCHROME1 inversion) and decodes
only the frame it shows. No header value that could identify the patient reaches the rendition
(written fresh from pixels), the metadata (a whitelist of technical fields) or a log line (pydicom's
logger is silenced and its warnings are captured while a file is read).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import struct
import warnings
import zlib
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

import attrs
import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, as_pixel_options, get_decoder
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from careshare import hookimpl
from careshare.core.kinds import Kind
from careshare.core.models import Identification, Processed
from careshare.core.problems import Problem, ProblemType
from careshare.plugins.filetypes.imaging import save_png, thumbnail_rendition

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from careshare.core.models import Source
    from careshare.core.policy import Policy

__all__ = [
    "DICOM_FRAME_OUT_OF_RANGE",
    "DICOM_IMAGE_TOO_LARGE",
    "DICOM_NO_PIXEL_DATA",
    "DICOM_TRUNCATED",
    "DICOM_UNREADABLE",
    "DICOM_UNSUPPORTED_PHOTOMETRIC",
    "DICOM_UNSUPPORTED_TRANSFER_SYNTAX",
    "KIND",
    "MEDIA_TYPE",
    "RenderOptions",
    "careshare_identify",
    "careshare_kinds",
    "careshare_process",
]

KIND = "dicom"
MEDIA_TYPE = "application/dicom"
HANDLER_VERSION = f"1 (pydicom {pydicom.__version__})"
#: PS3.10 7.1: a 128-byte preamble, then the four bytes "DICM".
_MAGIC_OFFSET = 128
_MAGIC = b"DICM"
#: The flag a clinician sees when text burned into the pixels may name the patient.
BURNED_IN_FLAG = "may-contain-burned-in-text"
#: Percentiles of the default window when the file carries none: robust to a few hot pixels.
_PERCENTILES = (0.5, 99.5)
#: Deflated Image Frame Compression (PS3.5 A.4.13): each frame is raw deflate; pydicom 3.0 has no decoder.
DEFLATED_IMAGE_FRAME = UID("1.2.840.10008.1.2.8.1")
#: Names of syntaxes pydicom's dictionary does not know yet (names and UIDs are not patient data).
_SYNTAX_NAMES = {
    DEFLATED_IMAGE_FRAME: "Deflated Image Frame Compression",
    "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
}
_PHOTOMETRICS = frozenset(
    {
        "MONOCHROME1",
        "MONOCHROME2",
        "PALETTE COLOR",
        "RGB",
        "YBR_FULL",
        "YBR_FULL_422",
        "YBR_PARTIAL_422",
        "YBR_PARTIAL_420",
        "YBR_ICT",
        "YBR_RCT",
        "HSV",
        "ARGB",
        "CMYK",
    }
)
_COLOUR_RENDERED = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"})
_MODALITY = re.compile(r"^[A-Z0-9_ ]{1,16}$")
_UID = re.compile(r"^[0-9.]{1,64}$")
_PIXEL_TAGS = {
    (0x7FE0, 0x0010): "PixelData",
    (0x7FE0, 0x0008): "FloatPixelData",
    (0x7FE0, 0x0009): "DoubleFloatPixelData",
}
_ITEM, _SEQUENCE_END = (0xFFFE, 0xE000), (0xFFFE, 0xE0DD)
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"}


def _positive_frame(_instance: Any, _attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError("frame counts from 1")


def _finite(_instance: Any, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{attribute.name} must be a finite number")


def _positive_width(_instance: Any, _attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError("window_width must be a number greater than 0")


@attrs.frozen
class RenderOptions:
    """What the clinician asks for when rendering again (``POST /v1/files/{fid}/render``), read as the
    policy's section for this handler; a field left out takes the file's default (middle frame, its own window).
    """

    #: 1-based, as DICOM numbers frames.
    frame: int | None = attrs.field(default=None, validator=_positive_frame)
    window_center: float | None = attrs.field(default=None, validator=_finite)
    window_width: float | None = attrs.field(default=None, validator=_positive_width)


@hookimpl
def careshare_kinds() -> list[Kind]:
    # No options of its own beyond the shared ones; the render options are per file, never an organisation's.
    return [Kind(KIND, "a DICOM file", render_options=RenderOptions)]


DICOM_UNREADABLE = ProblemType(
    "dicom-unreadable",
    422,
    "DICOM file could not be read",
    "This file is not a DICOM file careshare can read: its DICOM header is missing or damaged."
    " Export the image again from the imaging system and upload the new copy.",
)
DICOM_NO_PIXEL_DATA = ProblemType(
    "dicom-no-pixel-data",
    422,
    "DICOM file holds no image",
    "This DICOM file holds no image (it may be a report, a measurement or a DICOMDIR index),"
    " so there is nothing to show the patient. Upload the DICOM image file itself.",
)
DICOM_TRUNCATED = ProblemType(
    "dicom-truncated",
    422,
    "DICOM file is incomplete",
    "This DICOM file is cut short: part of its image data is missing, so it cannot be shown."
    " Copy or export it again from the imaging system and upload the complete file.",
)
DICOM_UNSUPPORTED_TRANSFER_SYNTAX = ProblemType(
    "dicom-unsupported-transfer-syntax",
    422,
    "DICOM compression not supported",
    "The image in this DICOM file is compressed in a way careshare cannot decode."
    " Export it uncompressed, or as JPEG or JPEG 2000, and upload the new copy.",
)
#: A codestream no decoder accepts is ``dicom-unreadable`` too (one code for "this file is damaged"),
#: with this sentence saying which part is.
PIXEL_DATA_DAMAGED = (
    "The image data in this DICOM file is damaged and could not be decoded."
    " Export the image again from the imaging system and upload the new copy."
)
DICOM_UNSUPPORTED_PHOTOMETRIC = ProblemType(
    "dicom-unsupported-photometric",
    422,
    "DICOM colour model not supported",
    "The image in this DICOM file uses a colour model careshare cannot show."
    " Export it as greyscale or RGB and upload the new copy.",
)
DICOM_IMAGE_TOO_LARGE = ProblemType(
    "dicom-image-too-large",
    422,
    "DICOM image too large",
    "The image in this DICOM file has more pixels than careshare accepts."
    " Export a smaller version of the image and upload it.",
)
DICOM_FRAME_OUT_OF_RANGE = ProblemType(
    "dicom-frame-out-of-range",
    422,
    "No such frame",
    "This DICOM file has fewer frames than the frame asked for. Choose a frame from 1 to the number of frames.",
)


@hookimpl
def careshare_identify(head: bytes) -> Identification | None:
    # Only Part 10 files: reading preamble-less datasets would mean guessing (pydicom's force=True).
    if head[_MAGIC_OFFSET : _MAGIC_OFFSET + 4] == _MAGIC:
        return Identification(kind=KIND, media_type=MEDIA_TYPE)
    return None


@hookimpl
def careshare_process(source: Source, kind: str, policy: Policy) -> Processed | None:
    if kind != KIND:
        return None
    with _quiet_pydicom(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        return _render(source, policy, caught)


@contextlib.contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """pydicom logs and warns with header values (an invalid date, a name): none may reach a log line."""
    pydicom_logger = logging.getLogger("pydicom")
    level, propagate = pydicom_logger.level, pydicom_logger.propagate
    # The level silences the decoders' child loggers too ("pydicom.pixels.decoders.base" logs errors).
    pydicom_logger.setLevel(logging.CRITICAL + 1)
    pydicom_logger.propagate = False
    try:
        yield
    finally:
        pydicom_logger.setLevel(level)
        pydicom_logger.propagate = propagate


# -- reading ----------------------------------------------------------------------------------


def _render(source: Source, policy: Policy, caught: list[warnings.WarningMessage]) -> Processed:
    with source.path.open("rb") as f:
        if f.read(_MAGIC_OFFSET + 4)[_MAGIC_OFFSET:] != _MAGIC:
            raise Problem(DICOM_UNREADABLE)
        f.seek(0)
        header = _read_header(f)
        syntax = _transfer_syntax(header)  # before the truncation check: garbage after DICM is unreadable
        if _truncation_warned(caught):
            raise Problem(DICOM_TRUNCATED)
        if syntax == DeflatedExplicitVRLittleEndian:
            # The whole dataset is deflated, so there is no file offset to seek to: read it whole.
            f.seek(0)
            header = _read_header(f, stop_before_pixels=False)
            if _truncation_warned(caught):
                raise Problem(DICOM_TRUNCATED)
            element = _pixel_element_of(header)
        else:
            element = _locate_pixels(f, syntax)
        if element is None:
            raise Problem(DICOM_NO_PIXEL_DATA)
        image = _ImageHeader(header, policy)
        if element.length is not None and element.length < _expected_length(header):
            raise Problem(DICOM_TRUNCATED)  # pydicom decodes the frames that are there without a word
        index = image.frame_index(policy.section(RenderOptions).frame)
        if syntax == DeflatedExplicitVRLittleEndian:
            pixels, photometric = _decode(header, header, syntax, index, element, image)
        elif syntax == DEFLATED_IMAGE_FRAME:
            pixels, photometric = _decode_deflated_frame(f, header, image, index)
        else:
            pixels, photometric = _decode(f, header, syntax, index, element, image)
    if _truncation_warned(caught):
        raise Problem(DICOM_TRUNCATED)

    frame_view = _frame_attributes(header, index)
    window: dict[str, Any] | None = None
    if pixels.ndim == 3 or photometric == "PALETTE COLOR":
        picture = _colour(pixels, header, photometric, image)
    else:
        picture, window = _greyscale(pixels, frame_view, image, policy)
    rendered = Image.fromarray(picture, "RGB" if picture.ndim == 3 else "L")
    shareable = save_png(rendered, source.workdir / "shareable.png", role="shareable")
    thumbnail = thumbnail_rendition(rendered, source.workdir, policy.thumbnail_size, policy.jpeg_quality)

    metadata = image.metadata(syntax)
    metadata["frame"] = index + 1
    if window is not None:
        metadata["window"] = window
    changes = ["rendered-to-png", "dicom-header-removed"]
    if image.frames > 1:
        changes.append("frame-selected")
    if metadata[BURNED_IN_FLAG]:
        changes.append(BURNED_IN_FLAG)
    return Processed(
        handler=KIND,
        handler_version=HANDLER_VERSION,
        metadata=metadata,
        renditions=(shareable, thumbnail),
        changes=tuple(changes),
        renderable=True,
    )


def _read_header(f: BinaryIO, *, stop_before_pixels: bool = True) -> Dataset:
    try:
        return pydicom.dcmread(f, stop_before_pixels=stop_before_pixels)
    except Exception:
        # InvalidDicomError, struct errors, bad lengths: pydicom has many ways to say "not DICOM".
        raise Problem(DICOM_UNREADABLE) from None


class _PixelElement(NamedTuple):
    keyword: str
    vr: str | None
    #: Bytes of native pixel data; None when encapsulated (undefined length).
    length: int | None


def _pixel_element_of(dataset: Dataset) -> _PixelElement | None:
    for keyword in _PIXEL_TAGS.values():
        if keyword in dataset:
            element = dataset[keyword]
            encapsulated = element.is_undefined_length
            return _PixelElement(keyword, None, None if encapsulated else len(element.value or b""))
    return None


def _expected_length(header: Dataset) -> int:
    try:
        return int(get_expected_length(header, unit="bytes"))
    except Exception:
        raise Problem(DICOM_UNREADABLE) from None


def _truncation_warned(caught: list[warnings.WarningMessage]) -> bool:
    """pydicom only warns when a file ends early ("End of file reached before delimiter", ...)."""
    return any(_is_truncation(str(w.message)) for w in caught)


def _is_truncation(message: str) -> bool:
    text = message.lower()
    return any(
        marker in text
        for marker in (
            "end of file",
            "truncat",
            "less than expected",
            "fewer bytes",
            "expected length",
            "unexpected eof",
        )
    )


def _transfer_syntax(header: Dataset) -> UID:
    syntax = header.file_meta.get("TransferSyntaxUID") if hasattr(header, "file_meta") else None
    if not syntax or not _UID.match(str(syntax)):
        raise Problem(DICOM_UNREADABLE)
    return UID(str(syntax))


def _locate_pixels(f: BinaryIO, syntax: UID) -> _PixelElement | None:
    """After a header read that stopped at the pixel data: check the element is whole, leave ``f`` at its value.

    pydicom reads a cut encapsulated element without a word (the corpus file
    ``emri_small_jpeg_2k_lossless_too_short.dcm`` loses its Pixel Data silently) and decodes the
    frames that are present, so the structure is checked here: every item complete, then the
    sequence delimiter. Only item headers are read; the frames are skipped with seeks.
    """
    start = f.tell()
    end = f.seek(0, 2)
    f.seek(start)
    little = syntax.is_little_endian if syntax.is_transfer_syntax else True
    implicit = syntax.is_implicit_VR if syntax.is_transfer_syntax else False
    order = "<" if little else ">"
    head = f.read(8)
    if len(head) == 0:
        return None
    if len(head) < 8:
        raise Problem(DICOM_TRUNCATED)
    group, element = struct.unpack(f"{order}HH", head[:4])
    keyword = _PIXEL_TAGS.get((group, element))
    if keyword is None:
        return None
    vr: str | None = None
    # Some writers use implicit VR whatever the syntax says; pydicom copes, and so must this check.
    if implicit or not head[4:6].isalpha() or not head[4:6].isupper():
        (length,) = struct.unpack(f"{order}L", head[4:])
    else:
        vr_bytes = head[4:6]
        vr = vr_bytes.decode("ascii", "replace")
        if vr_bytes in _LONG_VRS:
            more = f.read(4)
            if len(more) < 4:
                raise Problem(DICOM_TRUNCATED)
            (length,) = struct.unpack(f"{order}L", more)
        else:
            (length,) = struct.unpack(f"{order}H", head[6:])
    value_start = f.tell()
    if length != _UNDEFINED:
        if value_start + length > end:
            raise Problem(DICOM_TRUNCATED)
        return _PixelElement(keyword, vr, length)
    _walk_items(f, order, end)
    f.seek(value_start)
    return _PixelElement(keyword, vr, None)


def _walk_items(f: BinaryIO, order: str, end: int) -> None:
    while True:
        head = f.read(8)
        if len(head) < 8:
            raise Problem(DICOM_TRUNCATED)
        group, element, length = struct.unpack(f"{order}HHL", head)
        if (group, element) == _SEQUENCE_END:
            return
        if (group, element) != _ITEM or length == _UNDEFINED:
            raise Problem(DICOM_UNREADABLE, PIXEL_DATA_DAMAGED)
        if f.tell() + length > end:
            raise Problem(DICOM_TRUNCATED)
        f.seek(length, 1)


# -- the image and its frame ------------------------------------------------------------------


class _ImageHeader:
    """The Image Pixel module values the renderer needs, checked once."""

    def __init__(self, header: Dataset, policy: Policy) -> None:
        try:
            self.rows = int(header.Rows)
            self.columns = int(header.Columns)
            self.samples = int(header.get("SamplesPerPixel", 1) or 1)
            self.bits_allocated = int(header.BitsAllocated)
            self.bits_stored = int(header.get("BitsStored", self.bits_allocated) or self.bits_allocated)
            self.signed = int(header.get("PixelRepresentation", 0) or 0) == 1
            self.frames = max(int(header.get("NumberOfFrames", 1) or 1), 1)
            photometric = str(header.get("PhotometricInterpretation", "") or "").strip().upper()
        except (AttributeError, TypeError, ValueError, KeyError):
            raise Problem(DICOM_UNREADABLE) from None
        if self.rows <= 0 or self.columns <= 0 or self.samples not in (1, 3, 4) or self.bits_allocated <= 0:
            raise Problem(DICOM_UNREADABLE)
        if not photometric:
            photometric = "MONOCHROME2" if self.samples == 1 else "RGB"
        if photometric not in _PHOTOMETRICS:
            raise Problem(DICOM_UNSUPPORTED_PHOTOMETRIC)
        if photometric in ("HSV", "ARGB", "CMYK") or self.samples == 4:
            raise Problem(
                DICOM_UNSUPPORTED_PHOTOMETRIC,
                f"The image in this DICOM file uses the colour model {photometric}, which careshare cannot show."
                " Export it as greyscale or RGB and upload the new copy.",
                photometric_interpretation=photometric,
            )
        if self.rows * self.columns > policy.max_image_pixels:
            raise Problem(DICOM_IMAGE_TOO_LARGE, limit=policy.max_image_pixels)
        self.photometric = photometric
        burned_in = str(header.get("BurnedInAnnotation", "") or "").strip().upper()
        self.burned_in = burned_in if burned_in in ("YES", "NO") else None
        modality = str(header.get("Modality", "") or "").strip().upper()
        self.modality = modality if _MODALITY.match(modality) else None

    def frame_index(self, requested: int | None) -> int:
        """0-based index of the frame to show: ``requested`` is 1-based (as DICOM numbers frames)."""
        if requested is None:
            return self.frames // 2
        if not 1 <= requested <= self.frames:
            raise Problem(
                DICOM_FRAME_OUT_OF_RANGE,
                f"This DICOM file has {self.frames} frame(s); choose a frame from 1 to {self.frames}.",
                frames=self.frames,
            )
        return requested - 1

    def metadata(self, syntax: UID) -> dict[str, Any]:
        """Technical fields only: nothing here names, dates or locates the patient or the study."""
        return {
            "modality": self.modality,
            "rows": self.rows,
            "columns": self.columns,
            "frames": self.frames,
            "transfer_syntax": {"uid": str(syntax), "name": syntax_name(syntax)},
            "photometric_interpretation": self.photometric,
            "samples_per_pixel": self.samples,
            "bits_allocated": self.bits_allocated,
            "bits_stored": self.bits_stored,
            "pixel_representation": "signed" if self.signed else "unsigned",
            "burned_in_annotation": self.burned_in,
            # Absent means unknown: the clinician looks before sharing.
            BURNED_IN_FLAG: self.burned_in != "NO",
        }


def syntax_name(syntax: str) -> str:
    """A transfer syntax's name, or its UID when neither pydicom nor we know it."""
    known = _SYNTAX_NAMES.get(str(syntax))
    if known:
        return known
    uid = UID(str(syntax))
    return uid.name if uid.is_transfer_syntax else str(syntax)


def _unsupported(syntax: UID) -> Problem:
    name = syntax_name(syntax)
    label = name if name == str(syntax) else f"{name} ({syntax})"
    return Problem(
        DICOM_UNSUPPORTED_TRANSFER_SYNTAX,
        f"The image in this DICOM file is compressed as {label}, which careshare cannot decode."
        " Export it uncompressed, or as JPEG or JPEG 2000, and upload the new copy.",
        transfer_syntax=str(syntax),
        transfer_syntax_name=name,
    )


def _decode(
    src: BinaryIO | Dataset,
    header: Dataset,
    syntax: UID,
    index: int,
    element: _PixelElement,
    image: _ImageHeader,
) -> tuple[np.ndarray, str]:
    """Decode the one frame ``index`` (nothing else is decompressed); returns it and its photometric."""
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise _unsupported(syntax) from None
    if not decoder.is_available:
        raise _unsupported(syntax)
    options = as_pixel_options(header, transfer_syntax_uid=syntax, pixel_keyword=element.keyword)
    if element.vr is not None:
        options["pixel_vr"] = element.vr
    # pydicom 3.0.2 cannot pick one frame of 1-bit data whose frames do not start on a byte; such
    # frames are bit-packed (tiny), so all of them are unpacked and the one wanted kept.
    unaligned = image.bits_allocated == 1 and image.frames > 1 and (image.rows * image.columns * image.samples) % 8
    try:
        array, meta = decoder.as_array(src, index=None if unaligned else index, validate=True, raw=False, **options)
        if unaligned:
            array = array[index] if image.frames > 1 and array.ndim > 2 else array
    except MemoryError:
        raise
    except (AttributeError, KeyError):
        raise Problem(DICOM_UNREADABLE) from None  # a required Image Pixel element is missing
    except Exception:
        # Truncation was ruled out above (structure and length), so the codestream itself is bad.
        raise Problem(DICOM_UNREADABLE, PIXEL_DATA_DAMAGED) from None
    photometric = str(meta.get("photometric_interpretation", header.get("PhotometricInterpretation", "")))
    return array, photometric.strip().upper()


def _decode_deflated_frame(f: BinaryIO, header: Dataset, image: _ImageHeader, index: int) -> tuple[np.ndarray, str]:
    """Deflated Image Frame Compression: inflate one frame (bounded, so no deflate bomb) and read it as native."""
    from pydicom.encaps import get_frame

    f.seek(0)
    try:
        full = pydicom.dcmread(f)
        fragments = get_frame(full.PixelData, index, number_of_frames=image.frames)
    except Exception:
        raise Problem(DICOM_UNREADABLE, PIXEL_DATA_DAMAGED) from None
    expected = math.ceil(image.rows * image.columns * image.samples * image.bits_allocated / 8)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        frame = inflater.decompress(fragments, expected)
    except zlib.error:
        raise Problem(DICOM_UNREADABLE, PIXEL_DATA_DAMAGED) from None
    if len(frame) < expected:
        raise Problem(DICOM_TRUNCATED)
    native = ExplicitVRLittleEndian
    options = as_pixel_options(header, transfer_syntax_uid=native, number_of_frames=1, pixel_keyword="PixelData")
    try:
        array, meta = get_decoder(native).as_array(frame, validate=True, raw=False, **options)
    except Exception:
        raise Problem(DICOM_UNREADABLE, PIXEL_DATA_DAMAGED) from None
    return array, str(meta.get("photometric_interpretation", image.photometric)).strip().upper()


def _frame_attributes(header: Dataset, index: int) -> Dataset:
    """The rescale and VOI attributes that apply to frame ``index``: top level, then shared, then per-frame groups."""
    view = Dataset()
    for keyword in (
        "RescaleSlope",
        "RescaleIntercept",
        "RescaleType",
        "ModalityLUTSequence",
        "WindowCenter",
        "WindowWidth",
        "VOILUTFunction",
        "VOILUTSequence",
        "PixelRepresentation",
        "BitsStored",
        "BitsAllocated",
    ):
        if keyword in header:
            view[keyword] = header[keyword]
    groups = []
    with contextlib.suppress(Exception):
        shared = header.get("SharedFunctionalGroupsSequence")
        if shared:
            groups.append(shared[0])
        per_frame = header.get("PerFrameFunctionalGroupsSequence")
        if per_frame and index < len(per_frame):
            groups.append(per_frame[index])
    for group in groups:
        for sequence in ("PixelValueTransformationSequence", "FrameVOILUTSequence"):
            with contextlib.suppress(Exception):
                items = group.get(sequence)
                if items:
                    for element in items[0]:
                        view[element.tag] = element
    return view


# -- greyscale: modality LUT, VOI, inversion --------------------------------------------------


def _floats(view: Dataset, keyword: str) -> list[float]:
    """A numeric attribute's values (one or several), finite ones only; [] when absent or unreadable."""
    try:
        value = view.get(keyword)
    except Exception:
        return []
    if value is None or value == "":
        return []
    values = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    out = []
    for v in values:
        try:
            number = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out.append(number)
    return out


def _modality_view(view: Dataset) -> Dataset:
    """Only a sane rescale (finite, non-zero slope) or a modality LUT is applied; anything else is ignored."""
    clean = Dataset()
    if "ModalityLUTSequence" in view:
        with contextlib.suppress(Exception):
            item = view.ModalityLUTSequence[0]
            if "LUTDescriptor" in item and "LUTData" in item:
                clean.ModalityLUTSequence = view.ModalityLUTSequence
                for keyword in ("PixelRepresentation", "BitsStored", "BitsAllocated"):
                    if keyword in view:
                        clean[keyword] = view[keyword]
                return clean
    slope, intercept = _floats(view, "RescaleSlope")[:1], _floats(view, "RescaleIntercept")[:1]
    if slope and intercept and slope[0] != 0 and (slope[0], intercept[0]) != (1.0, 0.0):
        clean.RescaleSlope = slope[0]
        clean.RescaleIntercept = intercept[0]
    return clean


def _greyscale(
    pixels: np.ndarray, view: Dataset, image: _ImageHeader, policy: Policy
) -> tuple[np.ndarray, dict[str, Any]]:
    """Stored values -> 8-bit display values through one lookup table when the values are 8 or 16-bit integers.

    The modality LUT and the VOI transform are computed on the (at most 65,536) possible stored
    values, not on every pixel; the frame then costs one table lookup, and a histogram when the
    window comes from percentiles.
    """
    modality = _modality_view(view)
    if not pixels.dtype.isnative:
        # Big endian files decode to big endian arrays; the lookup below indexes by native value.
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    if pixels.dtype.kind in "iu" and pixels.dtype.itemsize <= 2:
        bits = pixels.dtype.itemsize * 8
        unsigned = pixels.view(f"u{pixels.dtype.itemsize}")
        domain = np.arange(2**bits, dtype=np.int64)
        if pixels.dtype.kind == "i":
            domain = np.where(domain >= 2 ** (bits - 1), domain - 2**bits, domain)
        values = _apply_modality(domain, modality)

        def distribution() -> tuple[np.ndarray, np.ndarray | None]:
            counts = np.bincount(unsigned.ravel(), minlength=2**bits)
            present = counts > 0
            return values[present], counts[present]

        window, to_unit = _choose_window(distribution, view, modality, image, policy)
        picture = _to_8bit(to_unit(values), image)[unsigned]
        if _saturated(picture, window, unsigned):
            window, to_unit = _choose_window(distribution, view, modality, image, policy, saturated=True)
            picture = _to_8bit(to_unit(values), image)[unsigned]
        return picture, window
    values = _apply_modality(pixels.astype(np.float64), modality)
    finite = np.isfinite(values)

    def sample() -> tuple[np.ndarray, np.ndarray | None]:
        return values[finite][:: max(1, values.size // 1_000_000)], None

    window, to_unit = _choose_window(sample, view, modality, image, policy)
    picture = _to_8bit(to_unit(np.where(finite, values, 0.0)), image)
    if _saturated(picture, window, values):
        window, to_unit = _choose_window(sample, view, modality, image, policy, saturated=True)
        picture = _to_8bit(to_unit(np.where(finite, values, 0.0)), image)
    return picture, window


def _saturated(picture: np.ndarray, window: dict[str, Any], stored: np.ndarray) -> bool:
    """A window from the file that turns a frame with detail into one flat shade shows the patient nothing."""
    if window["source"] not in ("header", "voi-lut") or int(picture.min()) != int(picture.max()):
        return False
    return bool(np.nanmin(stored) != np.nanmax(stored))


def _apply_modality(values: np.ndarray, modality: Dataset) -> np.ndarray:
    if not len(modality):
        return values.astype(np.float64)
    try:
        return np.asarray(apply_modality_lut(values, modality), dtype=np.float64)
    except Exception:
        # A malformed modality LUT: show the stored values rather than refuse the image.
        return values.astype(np.float64)


def _to_8bit(unit: np.ndarray, image: _ImageHeader) -> np.ndarray:
    unit = np.clip(unit, 0.0, 1.0)
    if image.photometric == "MONOCHROME1":
        unit = 1.0 - unit
    return np.rint(unit * 255.0).astype(np.uint8)


def _choose_window(
    distribution: Callable[[], tuple[np.ndarray, np.ndarray | None]],
    view: Dataset,
    modality: Dataset,
    image: _ImageHeader,
    policy: Policy,
    *,
    saturated: bool = False,
) -> tuple[dict[str, Any], Any]:
    """The VOI transform (to 0..1) and how it was chosen: request, header window, VOI LUT, bit depth or percentiles."""
    centers, widths = _floats(view, "WindowCenter"), _floats(view, "WindowWidth")
    header_window = (centers[0], widths[0]) if centers and widths and widths[0] > 0 else None
    function = str(view.get("VOILUTFunction", "") or "LINEAR").strip().upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        function = "LINEAR"
    requested = policy.section(RenderOptions)
    requested_c, requested_w = requested.window_center, requested.window_width
    if requested_c is not None or requested_w is not None:
        base = header_window or _percentile_window(*distribution())
        center = requested_c if requested_c is not None else base[0]
        width = requested_w if requested_w is not None and requested_w > 0 else base[1]
        if header_window is None:
            function = "LINEAR"
        return _window_record(center, width, function, "request"), _windowing(center, width, function)
    if saturated:
        center, width = _percentile_window(*distribution())
        record = _window_record(center, width, "LINEAR_EXACT", "percentile")
        record["reason"] = "file-window-shows-a-flat-image"
        return record, _windowing(center, width, "LINEAR_EXACT")
    if header_window is not None:
        center, width = header_window
        return _window_record(center, width, function, "header"), _windowing(center, width, function)
    voi = _voi_lut(view)
    if voi is not None:
        return {"source": "voi-lut"}, voi
    if not len(modality) and image.bits_stored <= 8:
        # 8-bit greyscale without a window (secondary captures, SEG): already meant for display.
        low = -(2 ** (image.bits_stored - 1)) if image.signed else 0
        high = low + 2**image.bits_stored - 1
        center, width = (low + high) / 2, float(max(high - low, 1))
        return _window_record(center, width, "LINEAR_EXACT", "bits-stored"), _windowing(center, width, "LINEAR_EXACT")
    center, width = _percentile_window(*distribution())
    return _window_record(center, width, "LINEAR_EXACT", "percentile"), _windowing(center, width, "LINEAR_EXACT")


def _window_record(center: float, width: float, function: str, source: str) -> dict[str, Any]:
    return {"center": round(float(center), 4), "width": round(float(width), 4), "function": function, "source": source}


def _percentile_window(values: np.ndarray, counts: np.ndarray | None) -> tuple[float, float]:
    """Centre and width spanning the 0.5th to 99.5th percentile of the (modality) values."""
    if values.size == 0:
        return 0.0, 1.0
    if counts is None:
        low, high = np.percentile(values, _PERCENTILES)
    else:
        order = np.argsort(values, kind="stable")
        ranked, cumulative = values[order], np.cumsum(counts[order])
        total = cumulative[-1]
        low = ranked[min(np.searchsorted(cumulative, total * _PERCENTILES[0] / 100, side="right"), len(ranked) - 1)]
        high = ranked[min(np.searchsorted(cumulative, total * _PERCENTILES[1] / 100, side="left"), len(ranked) - 1)]
    low, high = float(low), float(high)
    if high <= low:
        return low, 1.0
    return (low + high) / 2, high - low


def _windowing(center: float, width: float, function: str) -> Any:
    """PS3.3 C.11.2.1.2 window functions, mapped to 0..1 instead of an output bit range."""

    def linear(x: np.ndarray) -> np.ndarray:
        if width <= 1:
            return (x > center - 0.5).astype(np.float64)
        return (x - (center - 0.5)) / (width - 1) + 0.5

    def linear_exact(x: np.ndarray) -> np.ndarray:
        return (x - center) / width + 0.5

    def sigmoid(x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))

    return {"LINEAR": linear, "LINEAR_EXACT": linear_exact, "SIGMOID": sigmoid}[function]


def _voi_lut(view: Dataset) -> Any:
    """The first VOI LUT as a transform to 0..1 (scaled by its own output range), or None."""
    try:
        item = view.VOILUTSequence[0]
        data = np.asarray(item.LUTData, dtype=np.float64)
        if data.size == 0 or "LUTDescriptor" not in item:
            return None
    except Exception:
        return None
    low, high = float(data.min()), float(data.max())
    if high <= low:
        return None
    single = Dataset()
    single.VOILUTSequence = view.VOILUTSequence
    for keyword in ("PixelRepresentation", "BitsStored", "BitsAllocated"):
        if keyword in view:
            single[keyword] = view[keyword]

    def transform(x: np.ndarray) -> np.ndarray:
        try:
            out = apply_voi(x, single, index=0)
        except Exception:
            return (x - x.min()) / max(float(x.max() - x.min()), 1.0)
        return (np.asarray(out, dtype=np.float64) - low) / (high - low)

    return transform


# -- colour -----------------------------------------------------------------------------------


def _colour(pixels: np.ndarray, header: Dataset, photometric: str, image: _ImageHeader) -> np.ndarray:
    """RGB at 8 bits per channel: palettes looked up, YCbCr already converted by the decoder, depth reduced."""
    if photometric == "PALETTE COLOR":
        try:
            rgb = apply_color_lut(pixels, header)
            depth = int(header.RedPaletteColorLookupTableDescriptor[2])
        except Exception:
            raise Problem(DICOM_UNREADABLE) from None
        wide = rgb.dtype.itemsize > 1 and (depth > 8 or int(rgb.max()) > 255)
        return _reduce_depth(rgb, 16 if wide else 8)
    if pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise Problem(DICOM_UNSUPPORTED_PHOTOMETRIC)
    if photometric in ("YBR_PARTIAL_422", "YBR_PARTIAL_420"):
        pixels = _ybr_partial_to_rgb(pixels, image.bits_stored)
        return _reduce_depth(pixels, image.bits_stored)
    if photometric not in _COLOUR_RENDERED:
        raise Problem(DICOM_UNSUPPORTED_PHOTOMETRIC)
    return _reduce_depth(pixels, image.bits_stored)


def _reduce_depth(rgb: np.ndarray, bits: int) -> np.ndarray:
    if rgb.dtype == np.uint8:
        return np.ascontiguousarray(rgb)
    values = rgb.astype(np.int64)
    if bits > 8:
        values = values >> (bits - 8)
    return np.ascontiguousarray(np.clip(values, 0, 255).astype(np.uint8))


def _ybr_partial_to_rgb(ybr: np.ndarray, bits: int) -> np.ndarray:
    """ITU-R BT.601 studio-range YCbCr to RGB (PS3.3 C.7.6.3.1.2)."""
    scale = 2 ** max(bits - 8, 0)
    y, cb, cr = (ybr[..., i].astype(np.float64) / scale for i in range(3))
    r = 1.1644 * (y - 16) + 1.5960 * (cr - 128)
    g = 1.1644 * (y - 16) - 0.3918 * (cb - 128) - 0.8130 * (cr - 128)
    b = 1.1644 * (y - 16) + 2.0172 * (cb - 128)
    return np.clip(np.rint(np.stack([r, g, b], axis=-1)), 0, 255).astype(np.uint8)
