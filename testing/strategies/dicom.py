"""DICOM files built with pydicom: a builder for exact cases and Hypothesis strategies for random valid ones.

``build_dataset`` turns a NumPy array into a Part 10 dataset (greyscale, RGB, YBR_FULL, palette;
8/16-bit, signed, bits stored below bits allocated, planar configuration, frames, rescale and
window); ``to_bytes`` writes it with its 128-byte preamble and ``DICM``. ``dicom_files()`` draws
random valid files with what a renderer must produce from them.
"""

from __future__ import annotations

import functools
import io
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np
from hypothesis import strategies as st
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.pixels import convert_color_space
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["NATIVE_SYNTAXES", "DicomFile", "build_dataset", "dicom_files", "to_bytes"]

#: Secondary Capture Image Storage: valid for any photometric interpretation drawn here.
SECONDARY_CAPTURE = UID("1.2.840.10008.5.1.4.1.1.7")
NATIVE_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)
COMPRESSED_SYNTAXES = (RLELossless, JPEGLSLossless, JPEG2000Lossless)


def build_dataset(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_allocated: int | None = None,
    bits_stored: int | None = None,
    signed: bool = False,
    planar_configuration: int = 0,
    frames: bool | None = None,
    rescale: tuple[float, float] | None = None,
    window: tuple[Sequence[float], Sequence[float]] | tuple[float, float] | None = None,
    voi_lut_function: str | None = None,
    palette: np.ndarray | None = None,
    syntax: UID = ExplicitVRLittleEndian,
    **elements: Any,
) -> FileDataset:
    """A Part 10 dataset holding ``pixels``: (rows, cols), (rows, cols, 3), or with a leading frames axis.

    For RGB input with ``photometric="YBR_FULL"`` the pixels are converted to YBR before storing.
    ``palette`` is an (entries, 3) array of 16-bit RGB entries, first mapped value 0.
    ``frames`` forces a frames axis (default: 4-D arrays, or 3-D greyscale ones). Extra keyword
    arguments become elements (``PatientName="Zebedee^Quux"``). ``syntax`` may be compressed
    (RLE, JPEG-LS, JPEG 2000 lossless): pydicom's encoders compress the native dataset.
    """
    colour = photometric in ("RGB", "YBR_FULL")
    if frames is None:
        frames = pixels.ndim == (4 if colour else 3)
    stack = pixels if frames else pixels[np.newaxis]
    count, rows, columns = stack.shape[:3]
    allocated = bits_allocated or stack.dtype.itemsize * 8
    stored = bits_stored or allocated

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian if syntax in COMPRESSED_SYNTAXES else syntax
    ds = FileDataset(None, Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, stored, stored - 1
    ds.PixelRepresentation = int(signed)
    if frames:
        ds.NumberOfFrames = count
    if colour:
        ds.PlanarConfiguration = planar_configuration
        if photometric == "YBR_FULL":
            stack = convert_color_space(stack.astype(np.uint8), "RGB", "YBR_FULL", per_frame=True)
        if planar_configuration == 1:
            stack = np.ascontiguousarray(stack.transpose(0, 3, 1, 2))
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut_function is not None:
        ds.VOILUTFunction = voi_lut_function
    if palette is not None:
        entries = len(palette)
        for name, channel in zip(("Red", "Green", "Blue"), palette.T, strict=True):
            setattr(ds, f"{name}PaletteColorLookupTableDescriptor", [entries % 65536, 0, 16])
            setattr(ds, f"{name}PaletteColorLookupTableData", channel.astype("<u2").tobytes())
    for keyword, value in elements.items():
        setattr(ds, keyword, value)

    dtype = np.dtype(f"{'i' if signed else 'u'}{max(allocated // 8, 1)}")
    raw = stack.astype(dtype)
    if allocated == 1:
        from pydicom.pixels import pack_bits

        ds.PixelData = pack_bits(raw.astype(np.uint8).ravel())
    elif syntax == ExplicitVRBigEndian:
        ds.PixelData = raw.astype(dtype.newbyteorder(">")).tobytes()
    else:
        ds.PixelData = raw.tobytes()
    if allocated > 8:
        ds["PixelData"].VR = "OW"
    if syntax in COMPRESSED_SYNTAXES:
        ds.compress(syntax)
    return ds


def to_bytes(ds: FileDataset) -> bytes:
    """The dataset as a Part 10 file: preamble, ``DICM``, file meta, then the dataset."""
    syntax = ds.file_meta.TransferSyntaxUID
    if not syntax.is_transfer_syntax:
        # pydicom will not write a syntax it does not know (Deflated Image Frame, JPEG XL); such
        # syntaxes are encapsulated, so explicit VR little endian, and written element by element.
        fp = DicomBytesIO()
        fp.write(ds.preamble or b"\0" * 128)
        fp.write(b"DICM")
        write_file_meta_info(fp, ds.file_meta, enforce_standard=True)
        fp.is_little_endian, fp.is_implicit_VR = True, False
        if "PixelData" in ds:
            ds["PixelData"].is_undefined_length = True
        write_dataset(fp, ds)
        return fp.getvalue()
    buffer = io.BytesIO()
    dcmwrite(
        buffer,
        ds,
        enforce_file_format=True,
        implicit_vr=syntax.is_implicit_VR,
        little_endian=syntax.is_little_endian,
    )
    return buffer.getvalue()


@attrs.frozen
class DicomFile:
    """A drawn file and what rendering it must give: a ``columns`` x ``rows`` image, RGB when ``colour``."""

    data: bytes
    rows: int
    columns: int
    frames: int
    photometric: str
    colour: bool
    syntax: str


@st.composite
def dicom_files(draw: st.DrawFn, *, max_side: int = 40, max_frames: int = 4, compressed: bool = True) -> DicomFile:
    """Random valid Part 10 files, small enough that thousands render in seconds."""
    photometric = draw(st.sampled_from(["MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "PALETTE COLOR"]))
    colour = photometric in ("RGB", "YBR_FULL")
    allocated = draw(st.sampled_from([8, 16] if photometric != "MONOCHROME2" else [1, 8, 16]))
    stored = allocated if allocated == 1 else draw(st.integers(max(2, allocated - 7), allocated))
    signed = photometric.startswith("MONO") and allocated > 1 and draw(st.booleans())
    native_only = allocated == 1 or photometric == "YBR_FULL"
    choices = NATIVE_SYNTAXES + (COMPRESSED_SYNTAXES if compressed and not native_only else ())
    syntax = draw(st.sampled_from(choices))
    # OpenJPEG's default six resolution levels need at least 32 pixels a side.
    smallest = min(32, max_side) if syntax == JPEG2000Lossless else 1
    rows = draw(st.integers(smallest, max(smallest, max_side)))
    columns = draw(st.integers(smallest, max(smallest, max_side)))
    count = draw(st.integers(1, max_frames))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (count, rows, columns, 3) if colour else (count, rows, columns)
    if colour:
        pixels = rng.integers(0, 256, shape) if allocated == 8 else rng.integers(0, 2**stored, shape)
        if photometric == "YBR_FULL":
            # pydicom's RGB -> YBR_FULL conversion works on 8-bit values.
            allocated, stored = 8, 8
            pixels = rng.integers(0, 256, shape)
    elif signed:
        pixels = rng.integers(-(2 ** (stored - 1)), 2 ** (stored - 1), shape)
    else:
        pixels = rng.integers(0, 2**stored, shape)
    if draw(st.booleans()):  # a flat image is valid too, and a classic divide-by-zero
        pixels = np.full(shape, pixels.flat[0])

    options: dict[str, Any] = {}
    if photometric == "PALETTE COLOR":
        entries = min(2**stored, 4096)
        options["palette"] = rng.integers(0, 65536, (entries, 3))
        pixels = np.clip(pixels, 0, entries - 1)
    if photometric.startswith("MONO") and allocated > 1:
        if draw(st.booleans()):
            options["rescale"] = (
                draw(st.sampled_from([1.0, 0.5, 2.0, 0.001, -1.0])),
                draw(st.sampled_from([0.0, -1024.0, 100.5])),
            )
        window = draw(st.sampled_from(["none", "one", "several"]))
        if window != "none":
            centers = draw(st.lists(st.floats(-5000, 5000), min_size=1, max_size=3))
            widths = draw(st.lists(st.floats(1, 10000), min_size=len(centers), max_size=len(centers)))
            options["window"] = (centers[0], widths[0]) if window == "one" else (centers, widths)
            options["voi_lut_function"] = draw(st.sampled_from([None, "LINEAR", "LINEAR_EXACT", "SIGMOID"]))

    planar = draw(st.integers(0, 1)) if colour and syntax in NATIVE_SYNTAXES else 0
    with_frames = count > 1 or draw(st.booleans())
    build = functools.partial(
        build_dataset,
        pixels if with_frames else pixels[0],
        photometric=photometric,
        bits_allocated=allocated,
        bits_stored=stored,
        signed=signed,
        planar_configuration=planar,
        frames=with_frames,
        **options,
    )
    try:
        ds = build(syntax=syntax)
    except RuntimeError:
        # An encoder refused these pixels (JPEG-LS cannot grow noise past its buffer): store them natively.
        ds = build(syntax=ExplicitVRLittleEndian)
    return DicomFile(
        data=to_bytes(ds),
        rows=rows,
        columns=columns,
        frames=count,
        photometric=photometric,
        colour=colour or photometric == "PALETTE COLOR",
        syntax=str(ds.file_meta.TransferSyntaxUID),
    )
