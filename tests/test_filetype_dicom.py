"""The DICOM handler: rendering rules, refusals, privacy, real-world files, and the re-render endpoint.

Most tests call the hooks directly on files built with pydicom (``careshare.testing.strategies.dicom``);
the render endpoint is tested end to end through the real app, whose handlers run in child processes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import tempfile
import warnings
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np
import pydicom
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.data.data_manager import DATA_ROOT
from pydicom.dataelem import RawDataElement
from pydicom.encaps import encapsulate
from pydicom.tag import Tag
from pydicom.uid import UID, JPEGBaseline8Bit, RLELossless

from careshare.core import db
from careshare.core.models import Identification, Source
from careshare.core.plugins import get_plugin_manager
from careshare.core.policy import Policy
from careshare.core.problems import Problem
from careshare.plugins.filetypes import dicom
from careshare.testing import bearer, corpus_dir, make_pdf
from careshare.testing.api import assert_problem
from careshare.testing.strategies.dicom import DicomFile, build_dataset, dicom_files, to_bytes

if TYPE_CHECKING:
    from litestar.testing import AsyncTestClient

    from careshare.core.models import Processed
    from careshare.core.settings import Settings

CORPUS = corpus_dir()  # fails loudly when missing: these tests must not pass on nothing
#: pydicom's bundled test files, found on disk. ``get_testdata_files("*")`` would also try to
#: download pydicom-data's files over the network (slow retries when offline), so it is not used.
BUNDLED = Path(DATA_ROOT) / "test_files"
PRIVATE = {
    "PatientName": "Zebedee^Quux",
    "PatientID": "ZQ-99887766",
    "PatientBirthDate": "19230405",
    "InstitutionName": "Quuxville Infirmary",
    "ReferringPhysicianName": "Doctor^Xylophone",
    "StudyDate": "20190817",
    "AccessionNumber": "ACC-55443322",
    "StudyDescription": "Knee of Zebedee",
}
SECRETS = [*PRIVATE.values(), "Zebedee", "Quux", "Xylophone", "Quuxville"]
SPECIFIC_CODES = {
    "dicom-unreadable",
    "dicom-no-pixel-data",
    "dicom-truncated",
    "dicom-unsupported-transfer-syntax",
    "dicom-unsupported-photometric",
    "dicom-image-too-large",
    "dicom-frame-out-of-range",
}


# -- helpers -----------------------------------------------------------------------------------


def process(directory: Path, data: bytes, **policy: Any) -> Processed:
    """Run the handler's hook on ``data`` as ingest would: a staged file and a private workdir."""
    digest = hashlib.sha256(data).hexdigest()
    path = directory / f"{digest}.dcm"
    path.write_bytes(data)
    workdir = directory / f"work-{digest[:12]}-{len(list(directory.iterdir()))}"
    workdir.mkdir()
    source = Source(
        path=path, sha256=digest, size=len(data), kind=dicom.KIND, media_type=dicom.MEDIA_TYPE, workdir=workdir
    )
    # ``dicom_frame=`` ... are the render options (the handler's policy section), the rest shared fields.
    with attrs.validators.disabled():  # the handler checks a frame itself too: frame=0 must reach it
        render = dicom.RenderOptions(
            **{k.removeprefix("dicom_"): v for k, v in policy.items() if k.startswith("dicom_")}
        )
    shared = Policy(**{k: v for k, v in policy.items() if not k.startswith("dicom_")})
    result = dicom.careshare_process(source=source, kind=dicom.KIND, policy=shared.with_section(render))
    assert result is not None
    return result


def pixels(processed: Processed, role: str = "shareable") -> np.ndarray:
    output = next(r for r in processed.renditions if r.role == role)
    assert output.path is not None
    with Image.open(output.path) as image:
        return np.asarray(image)


def refusal(directory: Path, data: bytes, **policy: Any) -> Problem:
    with pytest.raises(Problem) as caught:
        process(directory, data, **policy)
    return caught.value


def linear_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 (LINEAR) to 8 bits, written out independently of the handler."""
    x = x.astype(np.float64)
    y = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255
    y = np.where(x <= center - 0.5 - (width - 1) / 2, 0, y)
    y = np.where(x > center - 0.5 + (width - 1) / 2, 255, y)
    return np.rint(np.clip(y, 0, 255)).astype(np.uint8)


def file_bytes(**kwargs: Any) -> bytes:
    pixels_ = kwargs.pop("pixels")
    return to_bytes(build_dataset(pixels_, **kwargs))


def ramp(rows: int = 16, columns: int = 16, *, low: int = 0, high: int = 4095, dtype: str = "u2") -> np.ndarray:
    return np.linspace(low, high, rows * columns).round().astype(dtype).reshape(rows, columns)


# -- identify ----------------------------------------------------------------------------------


def test_identify_needs_dicm_at_offset_128() -> None:
    data = file_bytes(pixels=ramp())
    assert dicom.careshare_identify(head=data[:65536]) == Identification("dicom", "application/dicom")
    assert dicom.careshare_identify(head=b"DICM" + data[132:]) is None  # magic at the start is not Part 10
    assert dicom.careshare_identify(head=data[132:]) is None  # a dataset without preamble: never forced
    assert dicom.careshare_identify(head=b"\0" * 128 + b"DIC") is None


def test_the_entry_point_plugin_identifies_and_processes_dicom(tmp_path: Path) -> None:
    pm = get_plugin_manager()
    data = file_bytes(pixels=ramp())
    assert pm.hook.careshare_identify(head=data, filename="x.bin").kind == "dicom"
    path = tmp_path / "scan.dcm"
    path.write_bytes(data)
    source = Source(path=path, sha256="0", size=len(data), kind="dicom", media_type=dicom.MEDIA_TYPE, workdir=tmp_path)
    processed = pm.hook.careshare_process(source=source, kind="dicom", policy=Policy())
    assert processed.handler == "dicom"
    assert f"pydicom {pydicom.__version__}" in processed.handler_version
    assert [r.role for r in processed.renditions] == ["shareable", "thumbnail"]
    assert processed.renditions[0].media_type == "image/png"


def test_other_kinds_are_left_to_other_handlers(tmp_path: Path) -> None:
    source = Source(path=tmp_path, sha256="0", size=0, kind="pdf", media_type="application/pdf", workdir=tmp_path)
    assert dicom.careshare_process(source=source, kind="pdf", policy=Policy()) is None


# -- rendering ---------------------------------------------------------------------------------


def test_window_is_applied_with_the_dicom_linear_function(tmp_path: Path) -> None:
    stored = ramp(high=1000)
    out = process(tmp_path, file_bytes(pixels=stored, bits_stored=12, window=(500.0, 301.0)))
    assert np.array_equal(pixels(out), linear_window(stored, 500, 301))
    assert out.metadata["window"] == {"center": 500.0, "width": 301.0, "function": "LINEAR", "source": "header"}


def test_the_first_of_several_windows_is_used(tmp_path: Path) -> None:
    stored = ramp(high=1000)
    out = process(tmp_path, file_bytes(pixels=stored, bits_stored=12, window=([200.0, 800.0], [100.0, 50.0])))
    assert np.array_equal(pixels(out), linear_window(stored, 200, 100))


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    stored = ramp(high=4000)
    mono2 = pixels(process(tmp_path, file_bytes(pixels=stored, bits_stored=12, window=(2000.0, 3000.0))))
    mono1 = pixels(
        process(tmp_path, file_bytes(pixels=stored, bits_stored=12, window=(2000.0, 3000.0), photometric="MONOCHROME1"))
    )
    assert np.array_equal(mono1, 255 - mono2)
    assert mono1[0, 0] == 255 and mono1[-1, -1] == 0  # low values are white in MONOCHROME1


def test_rescale_is_applied_before_the_window(tmp_path: Path) -> None:
    stored = np.array([[400, 500, 600]], dtype="u2")  # slope 2, intercept -1000: -200, 0, 200 HU
    out = process(tmp_path, file_bytes(pixels=stored, bits_stored=12, rescale=(2.0, -1000.0), window=(0.0, 401.0)))
    assert pixels(out).tolist() == [[0, 128, 255]]


def test_signed_16_bit_ct_with_a_soft_tissue_window(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    hounsfield = rng.integers(-1024, 3072, (32, 48)).astype("i2")
    data = file_bytes(pixels=hounsfield, signed=True, bits_stored=16, window=(40.0, 400.0), Modality="CT")
    out = process(tmp_path, data)
    assert pixels(out).shape == (32, 48)
    assert np.array_equal(pixels(out), linear_window(hounsfield, 40, 400))
    assert out.metadata["pixel_representation"] == "signed"
    assert out.metadata["modality"] == "CT"


def test_bits_stored_below_bits_allocated_signed(tmp_path: Path) -> None:
    # 12 of 16 bits, signed: -2048..2047 stored sign-extended; the window spans exactly that range.
    stored = np.linspace(-2048, 2047, 64).round().astype("i2").reshape(8, 8)
    out = process(tmp_path, file_bytes(pixels=stored, signed=True, bits_stored=12, window=(0.0, 4096.0)))
    assert np.array_equal(pixels(out), linear_window(stored, 0, 4096))


def test_percentile_window_when_the_file_has_none(tmp_path: Path) -> None:
    stored = ramp(20, 20, low=1000, high=2000)
    stored[0, 0] = 4095  # one hot pixel must not flatten the image
    out = process(tmp_path, file_bytes(pixels=stored, bits_stored=12))
    image = pixels(out)
    assert out.metadata["window"]["source"] == "percentile"
    assert image.min() == 0 and image.max() == 255
    assert len(np.unique(image)) > 200  # the ramp keeps its contrast despite the hot pixel
    assert 1900 < out.metadata["window"]["center"] + out.metadata["window"]["width"] / 2 < 2010


def test_a_window_that_flattens_the_frame_falls_back_to_percentiles(tmp_path: Path) -> None:
    stored = ramp(high=1000) + 3000  # all above the window: the file's window shows a white square
    out = process(tmp_path, file_bytes(pixels=stored, bits_stored=12, window=(40.0, 80.0)))
    assert out.metadata["window"]["source"] == "percentile"
    assert pixels(out).min() < pixels(out).max()


def test_eight_bit_greyscale_without_window_is_shown_as_stored(tmp_path: Path) -> None:
    stored = ramp(high=200, dtype="u1")
    out = process(tmp_path, file_bytes(pixels=stored))
    assert np.array_equal(pixels(out), stored)


@pytest.mark.parametrize("planar", [0, 1])
def test_rgb_is_kept_with_either_planar_configuration(tmp_path: Path, planar: int) -> None:
    rgb = np.random.default_rng(planar).integers(0, 256, (12, 20, 3)).astype("u1")
    out = process(tmp_path, file_bytes(pixels=rgb, photometric="RGB", planar_configuration=planar))
    assert np.array_equal(pixels(out), rgb)
    assert "window" not in out.metadata


def test_ybr_full_is_converted_to_rgb(tmp_path: Path) -> None:
    rgb = np.zeros((4, 4, 3), dtype="u1")
    rgb[0], rgb[1], rgb[2], rgb[3] = (255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 150, 100)
    out = process(tmp_path, file_bytes(pixels=rgb, photometric="YBR_FULL"))
    assert np.abs(pixels(out).astype(int) - rgb.astype(int)).max() <= 3


def test_sixteen_bit_rgb_is_reduced_to_eight(tmp_path: Path) -> None:
    rgb = np.full((2, 2, 3), [65535, 32768, 256], dtype="u2")
    out = process(tmp_path, file_bytes(pixels=rgb, photometric="RGB"))
    assert pixels(out)[0, 0].tolist() == [255, 128, 1]


def test_palette_colour_is_looked_up(tmp_path: Path) -> None:
    palette = np.array([[0, 0, 0], [65535, 0, 0], [0, 65535, 0], [0, 0, 32768]])
    indices = np.array([[0, 1], [2, 3]], dtype="u1")
    out = process(tmp_path, file_bytes(pixels=indices, photometric="PALETTE COLOR", palette=palette))
    assert pixels(out).tolist() == [[[0, 0, 0], [255, 0, 0]], [[0, 255, 0], [0, 0, 128]]]


def frames_file(count: int = 5, **kwargs: Any) -> bytes:
    """Frame k (1-based) is a flat image of value 40 * k, 8-bit: shown as stored."""
    stack = np.stack([np.full((6, 7), 40 * k, dtype="u1") for k in range(1, count + 1)])
    return file_bytes(pixels=stack, **kwargs)


def test_multi_frame_shows_the_middle_frame(tmp_path: Path) -> None:
    out = process(tmp_path, frames_file(5))
    assert out.metadata["frames"] == 5 and out.metadata["frame"] == 3
    assert np.all(pixels(out) == 120)
    assert "frame-selected" in out.changes


def test_compressed_multi_frame_decodes_the_chosen_frame(tmp_path: Path) -> None:
    out = process(tmp_path, frames_file(4, syntax=RLELossless), dicom_frame=4)
    assert out.metadata["transfer_syntax"] == {"uid": str(RLELossless), "name": "RLE Lossless"}
    assert np.all(pixels(out) == 160)


def test_enhanced_per_frame_rescale_is_honoured(tmp_path: Path) -> None:
    ds = build_dataset(np.stack([np.full((4, 4), 100, dtype="u2")] * 3), bits_stored=12, window=(0.5, 2.0))
    per_frame = []
    for intercept in (-1000.0, 0.0, -100.0):  # frame 2 maps 100 -> 100, above the window: white
        transform = pydicom.Dataset()
        transform.RescaleSlope, transform.RescaleIntercept = 1.0, intercept
        group = pydicom.Dataset()
        group.PixelValueTransformationSequence = [transform]
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    out = process(tmp_path, to_bytes(ds), dicom_frame=3)  # 100 - 100 = 0: mid-grey in this window
    assert np.all(pixels(out) == 128)
    out = process(tmp_path, to_bytes(ds), dicom_frame=2)
    assert np.all(pixels(out) == 255)
    out = process(tmp_path, to_bytes(ds), dicom_frame=1)
    assert np.all(pixels(out) == 0)


def test_render_options_override_frame_and_window(tmp_path: Path) -> None:
    stack = np.stack([ramp(high=1000), ramp(high=1000) + 1000])
    data = file_bytes(pixels=stack, bits_stored=12, window=(500.0, 1000.0))
    out = process(tmp_path, data, dicom_frame=1, dicom_window_center=300.0, dicom_window_width=200.0)
    assert out.metadata["frame"] == 1
    assert out.metadata["window"] == {"center": 300.0, "width": 200.0, "function": "LINEAR", "source": "request"}
    assert np.array_equal(pixels(out), linear_window(stack[0], 300, 200))
    # Only the width: the file's centre stays.
    out = process(tmp_path, data, dicom_window_width=50.0)
    assert out.metadata["window"]["center"] == 500.0 and out.metadata["window"]["width"] == 50.0


def test_thumbnail_is_small_and_the_shareable_is_a_plain_png(tmp_path: Path) -> None:
    out = process(tmp_path, file_bytes(pixels=ramp(600, 400)), thumbnail_size=64)
    shareable, thumbnail = out.renditions
    with Image.open(shareable.path) as image:
        assert image.format == "PNG" and image.mode == "L" and image.size == (400, 600)
        assert not {"exif", "icc_profile", "dpi"} & set(image.info) and not getattr(image, "text", {})
    with Image.open(thumbnail.path) as image:
        assert max(image.size) == 64 and image.format == "JPEG"


def test_metadata_is_technical_and_flags_burned_in_text(tmp_path: Path) -> None:
    out = process(tmp_path, file_bytes(pixels=ramp(), Modality="US", BurnedInAnnotation="NO"))
    assert out.metadata == {
        "modality": "US",
        "rows": 16,
        "columns": 16,
        "frames": 1,
        "transfer_syntax": {"uid": "1.2.840.10008.1.2.1", "name": "Explicit VR Little Endian"},
        "photometric_interpretation": "MONOCHROME2",
        "samples_per_pixel": 1,
        "bits_allocated": 16,
        "bits_stored": 16,
        "pixel_representation": "unsigned",
        "burned_in_annotation": "NO",
        "may-contain-burned-in-text": False,
        "frame": 1,
        "window": out.metadata["window"],
    }
    assert "may-contain-burned-in-text" not in out.changes
    for value in ("YES", None):
        extra = {"BurnedInAnnotation": value} if value else {}
        flagged = process(tmp_path, file_bytes(pixels=ramp(), **extra))
        assert flagged.metadata["may-contain-burned-in-text"] is True
        assert "may-contain-burned-in-text" in flagged.changes


def test_deflated_image_frame_compression_is_inflated(tmp_path: Path) -> None:
    stack = np.stack([ramp(8, 8, high=200, dtype="u1"), np.full((8, 8), 77, dtype="u1")])
    ds = build_dataset(stack)
    deflaters = [zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS) for _ in stack]
    ds.PixelData = encapsulate([d.compress(f.tobytes()) + d.flush() for d, f in zip(deflaters, stack, strict=True)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = dicom.DEFLATED_IMAGE_FRAME
    out = process(tmp_path, to_bytes(ds), dicom_frame=2)
    assert np.all(pixels(out) == 77)
    assert out.metadata["transfer_syntax"]["name"] == "Deflated Image Frame Compression"


# -- refusals ----------------------------------------------------------------------------------


def test_not_dicom_is_unreadable(tmp_path: Path) -> None:
    assert refusal(tmp_path, b"%PDF-1.7 not a dicom file at all" * 10).code == "dicom-unreadable"
    assert refusal(tmp_path, b"\0" * 128 + b"DICM" + b"\xff" * 300).code == "dicom-unreadable"


def test_a_dataset_without_pixel_data_is_refused(tmp_path: Path) -> None:
    ds = build_dataset(ramp())
    del ds.PixelData
    problem = refusal(tmp_path, to_bytes(ds))
    assert problem.code == "dicom-no-pixel-data"
    assert "no image" in problem.detail


def test_native_pixel_data_cut_short_is_truncated(tmp_path: Path) -> None:
    data = file_bytes(pixels=ramp(64, 64))
    assert refusal(tmp_path, data[:-1000]).code == "dicom-truncated"


def test_fewer_pixel_bytes_than_the_frames_need_is_truncated(tmp_path: Path) -> None:
    ds = build_dataset(frames_stack := np.stack([ramp(8, 8)] * 4))
    ds.PixelData = frames_stack[:2].tobytes()  # the element is whole, but holds two frames of four
    assert refusal(tmp_path, to_bytes(ds), dicom_frame=1).code == "dicom-truncated"


def test_encapsulated_pixel_data_cut_inside_an_item_is_truncated(tmp_path: Path) -> None:
    data = frames_file(6, syntax=RLELossless)
    # The middle frame is complete: pydicom would decode it and say nothing about the rest.
    assert refusal(tmp_path, data[:-20]).code == "dicom-truncated"
    assert refusal(tmp_path, data[:-8]).code == "dicom-truncated"  # only the sequence delimiter is gone


def test_an_unsupported_transfer_syntax_is_named(tmp_path: Path) -> None:
    ds = build_dataset(ramp(dtype="u1"))
    ds.PixelData = encapsulate([b"\xff\x0a" + b"\0" * 64])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.110")
    problem = refusal(tmp_path, to_bytes(ds))
    assert problem.code == "dicom-unsupported-transfer-syntax"
    assert "JPEG XL Lossless (1.2.840.10008.1.2.4.110)" in problem.detail
    assert problem.extra == {"transfer_syntax": "1.2.840.10008.1.2.4.110", "transfer_syntax_name": "JPEG XL Lossless"}


def test_damaged_compressed_pixel_data_is_refused(tmp_path: Path) -> None:
    ds = build_dataset(ramp(dtype="u1"))
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xdb" + b"\x13" * 200 + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    problem = refusal(tmp_path, to_bytes(ds))
    assert problem.code == "dicom-unreadable"
    assert problem.detail == dicom.PIXEL_DATA_DAMAGED


def test_an_unshowable_colour_model_is_refused(tmp_path: Path) -> None:
    ds = build_dataset(np.zeros((4, 4, 3), dtype="u1"), photometric="RGB")
    ds.PhotometricInterpretation = "HSV"
    problem = refusal(tmp_path, to_bytes(ds))
    assert problem.code == "dicom-unsupported-photometric"
    assert "HSV" in problem.detail


def test_too_many_pixels_are_refused_before_decoding(tmp_path: Path) -> None:
    problem = refusal(tmp_path, file_bytes(pixels=ramp(100, 100)), max_image_pixels=9_999)
    assert problem.code == "dicom-image-too-large"


@pytest.mark.parametrize("frame", [0, 6, 1000])
def test_a_frame_out_of_range_is_refused(tmp_path: Path, frame: int) -> None:
    problem = refusal(tmp_path, frames_file(5), dicom_frame=frame)
    assert problem.code == "dicom-frame-out-of-range"
    assert problem.extra == {"frames": 5}
    assert "from 1 to 5" in problem.detail


def test_every_refusal_code_has_a_plain_sentence() -> None:
    types = [value for name, value in vars(dicom).items() if name.startswith("DICOM_") and hasattr(value, "code")]
    assert {t.code for t in types} == SPECIFIC_CODES
    for problem_type in types:
        assert problem_type.status == 422
        assert problem_type.detail.endswith(".") and len(problem_type.detail.split()) >= 12


# -- privacy -----------------------------------------------------------------------------------


def test_no_header_value_reaches_renditions_metadata_or_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Values the handler reads hold patient data here (a Modality, a window centre that is not a
    # number): the handler must neither copy them out nor fail on them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values while the test writes them
        ds = build_dataset(ramp(), **PRIVATE, Modality="Zebedee", BurnedInAnnotation="Quux", SeriesDate="Zebedee")
        ds[0x00281050] = RawDataElement(Tag(0x00281050), "DS", 8, b"Zebedee ", 0, False, True)
        ds[0x00281051] = RawDataElement(Tag(0x00281051), "DS", 4, b"100 ", 0, False, True)
        data = to_bytes(ds)
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        out = process(tmp_path, data)
    visible = [json.dumps(out.metadata), json.dumps(out.changes), caplog.text, *(str(w.message) for w in escaped)]
    for rendition in out.renditions:
        assert rendition.path is not None
        visible.append(rendition.path.read_bytes().decode("latin-1"))
    for text in visible:
        for secret in SECRETS:
            assert secret not in text
    assert not escaped


def test_refusals_carry_no_header_values(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ds = build_dataset(ramp(), **PRIVATE)
    del ds.PixelData
    problem = refusal(tmp_path, to_bytes(ds))
    text = json.dumps(problem.to_dict()) + caplog.text
    assert not [secret for secret in SECRETS if secret in text]


# -- properties --------------------------------------------------------------------------------


@hypothesis_settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dicom_files())
def test_random_valid_datasets_render_to_an_8_bit_png_of_their_size(drawn: DicomFile) -> None:
    with tempfile.TemporaryDirectory() as directory:
        out = process(Path(directory), drawn.data)  # anything but a Problem fails the test
        assert out.metadata["rows"] == drawn.rows and out.metadata["columns"] == drawn.columns
        with Image.open(out.renditions[0].path) as image:
            image.load()
            assert image.format == "PNG"
            assert image.mode == ("RGB" if drawn.colour else "L")  # 8 bits per channel
            assert image.size == (drawn.columns, drawn.rows)
        # Fails when the chosen frame is reported 0-based or past the last frame of the drawn file.
        assert 1 <= out.metadata["frame"] <= drawn.frames


@hypothesis_settings(deadline=None)
@given(st.binary(max_size=2048), st.booleans())
def test_random_bytes_never_crash_identify_or_process(data: bytes, with_magic: bool) -> None:
    if with_magic:
        data = b"\0" * 128 + b"DICM" + data
    assert dicom.careshare_identify(head=data) in (None, Identification("dicom", "application/dicom"))
    with tempfile.TemporaryDirectory() as directory:
        try:
            process(Path(directory), data)
        except Problem as problem:
            assert problem.code in SPECIFIC_CODES


@hypothesis_settings(deadline=None, max_examples=40)
@given(dicom_files(compressed=True, max_side=40), st.data())
def test_damaged_valid_files_are_refused_not_crashed(drawn: DicomFile, data: st.DataObject) -> None:
    # Positions as fractions of the file: the drawn file's length may differ between Hypothesis's
    # replays (generated UIDs vary in length), and draws must not depend on it.
    span = len(drawn.data) - 133
    cut = 132 + data.draw(st.integers(0, 2**16)) * span // 2**16
    flip = 132 + data.draw(st.integers(0, 2**16)) * span // 2**16
    damaged = bytearray(drawn.data[:cut])
    if flip < len(damaged):
        damaged[flip] ^= 0xFF
    with tempfile.TemporaryDirectory() as directory:
        try:
            process(Path(directory), bytes(damaged))
        except Problem as problem:
            assert problem.code in SPECIFIC_CODES


# -- real-world files: pydicom's bundled set and the shared corpus -----------------------------


def _bundled_dicom_files() -> list[Path]:
    files = (p for p in BUNDLED.rglob("*") if p.is_file())
    return sorted(p for p in files if p.open("rb").read(132)[128:] == b"DICM")


#: Bundled files refused for a reason other than "no pixel data" (that one is checked against pydicom).
KNOWN_REFUSALS = {
    "JPEG-lossy.dcm": "dicom-unreadable",  # pydicom's own tests: libjpeg rejects its SOS (Se=0)
    "JPEG2000-embedded-sequence-delimiter.dcm": "dicom-unreadable",  # no decoder reads its codestream
    "MR_truncated.dcm": "dicom-truncated",  # its Pixel Data ends early
    "badVR.dcm": "dicom-unreadable",  # an invalid VR in the header
    "meta_missing_tsyntax.dcm": "dicom-unreadable",  # no Transfer Syntax UID
    "nested_priv_SQ.dcm": "dicom-unreadable",  # Pixel Data without Bits Allocated
}


def _has_pixel_data(path: Path) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
    return any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


@pytest.mark.parametrize("path", _bundled_dicom_files(), ids=lambda p: str(p.relative_to(BUNDLED)))
def test_every_bundled_pydicom_file_renders_or_is_refused_specifically(tmp_path: Path, path: Path) -> None:
    data = path.read_bytes()
    assert dicom.careshare_identify(head=data[:65536]) is not None
    try:
        out = process(tmp_path, data, thumbnail_size=32)
    except Problem as problem:
        expected = KNOWN_REFUSALS.get(path.name)
        if expected is None:
            assert problem.code == "dicom-no-pixel-data", problem
            assert not _has_pixel_data(path)
        else:
            assert problem.code == expected
        return
    assert path.name not in KNOWN_REFUSALS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SC_rgb_jpeg.dcm: "Expected explicit VR, but found implicit VR"
        header = pydicom.dcmread(path, stop_before_pixels=True)
    image = pixels(out)
    assert image.shape[:2] == (header.Rows, header.Columns)
    assert image.min() < image.max(), "a blank rendition"


def _corpus_dicom() -> list[tuple[str, str]]:
    with (CORPUS / "MANIFEST.tsv").open(newline="") as handle:
        rows = csv.DictReader(handle, delimiter="\t")
        return [(row["path"], row["expected"]) for row in rows if row["path"].startswith("dicom/")]


#: What each corpus verdict means here. The README lists two DICOM disagreements with plain pydicom;
#: this handler agrees with the manifest on both: liver_deflate.dcm (Deflated Image Frame
#: Compression, no pydicom decoder) is inflated here and accepted; emri_..._too_short.dcm (pydicom
#: warns and drops Pixel Data) is caught by the pixel data structure check and refused as truncated.
#: nema-nm1_jply.dcm (expected refuse:corrupt) fails in libjpeg (-1038): dicom-unreadable, damaged image data.
CORPUS_CODES = {
    "refuse:corrupt": {"dicom-truncated", "dicom-unreadable"},
    "refuse:nopixels": {"dicom-no-pixel-data"},
}


@pytest.mark.parametrize(("name", "expected"), _corpus_dicom())
def test_corpus_dicom_files_end_as_the_manifest_says(tmp_path: Path, name: str, expected: str) -> None:
    data = (CORPUS / name).read_bytes()
    assert dicom.careshare_identify(head=data[:65536]) is not None
    if expected == "accept":
        out = process(tmp_path, data, thumbnail_size=32)
        image = pixels(out)
        assert image.shape[:2] == (out.metadata["rows"], out.metadata["columns"])
        assert image.min() < image.max()
    else:
        assert refusal(tmp_path, data).code in CORPUS_CODES[expected]


def test_the_corpus_truncated_file_is_refused_as_truncated(tmp_path: Path) -> None:
    data = (CORPUS / "dicom/pydicomdata_emri_small_jpeg_2k_lossless_too_short.dcm").read_bytes()
    assert refusal(tmp_path, data).code == "dicom-truncated"


# -- the render endpoint, end to end -----------------------------------------------------------


async def upload_dicom(client: AsyncTestClient[Any], headers: dict[str, str], patient_id: str, data: bytes) -> Any:
    response = await client.post(
        f"/v1/patients/{patient_id}/files", content=data, params={"filename": "scan.dcm"}, headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()


def render_file() -> bytes:
    stack = np.stack([ramp(32, 32, high=1000) + 1000 * k for k in range(5)])
    return file_bytes(pixels=stack, bits_stored=14, window=(2000.0, 1000.0), **PRIVATE)


async def test_render_endpoint_replaces_the_shareable_copy(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    uploaded = await upload_dicom(client, clinician, patient_id, render_file())
    assert uploaded["kind"] == "dicom" and uploaded["metadata"]["frame"] == 3
    before = {r["role"]: r for r in uploaded["renditions"]}
    assert before["shareable"]["media_type"] == "image/png"

    body = {"frame": 1, "window_center": 500.0, "window_width": 1000}
    response = await client.post(f"/v1/files/{uploaded['id']}/render", json=body, headers=clinician)
    assert response.status_code == 200, response.text
    rendered = response.json()
    after = {r["role"]: r for r in rendered["renditions"]}
    assert set(after) == {"original", "shareable", "thumbnail"}
    assert after["original"] == before["original"]
    assert after["shareable"]["sha256"] != before["shareable"]["sha256"]
    assert rendered["metadata"]["frame"] == 1
    assert rendered["metadata"]["window"]["source"] == "request"
    assert rendered["check"]["render_options"] == {"frame": 1, "window_center": 500.0, "window_width": 1000}
    assert rendered["check"]["outputs"]["shareable"] == after["shareable"]["sha256"]

    # The new shareable copy is frame 1 in the asked window.
    content = await client.get(f"/v1/files/{uploaded['id']}/content?rendition=shareable", headers=clinician)
    with Image.open(io.BytesIO(content.content)) as image:
        assert np.array_equal(np.asarray(image), linear_window(ramp(32, 32, high=1000), 500, 1000))
    assert not [secret for secret in SECRETS if secret.encode() in content.content]

    cs = client.app.state.careshare
    assert await cs.store.exists(before["shareable"]["sha256"])  # what was already shared stays pinned
    async with cs.engine.connect() as conn:
        actions = (
            await conn.execute(
                sa.select(db.audit_events.c.action, db.audit_events.c.actor).where(
                    db.audit_events.c.file_id == uploaded["id"]
                )
            )
        ).all()
    assert ("file.rendered", "dr-a") in [tuple(a) for a in actions]
    shown = await client.get(f"/v1/files/{uploaded['id']}", headers=clinician)
    assert shown.json()["renditions"] == rendered["renditions"]
    assert not [secret for secret in SECRETS if secret in caplog.text + json.dumps(rendered)]

    # An empty body goes back to the defaults: the middle frame and the file's window.
    reset = await client.post(f"/v1/files/{uploaded['id']}/render", json={}, headers=clinician)
    assert reset.status_code == 200
    assert {r["role"]: r["sha256"] for r in reset.json()["renditions"]}["shareable"] == before["shareable"]["sha256"]


async def test_render_endpoint_refusals(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, settings: Settings
) -> None:
    uploaded = await upload_dicom(client, clinician, patient_id, render_file())
    url = f"/v1/files/{uploaded['id']}/render"

    problem = assert_problem(
        await client.post(url, json={"frame": 6}, headers=clinician), 422, "dicom-frame-out-of-range"
    )
    assert problem["frames"] == 5
    for bad in ({"frame": 0}, {"window_width": 0}, {"window_width": -3}, {"frame": "2"}, {"zoom": 2}, {"frame": True}):
        assert_problem(await client.post(url, json=bad, headers=clinician), 422, "invalid-request")

    other_org = bearer(settings, "clinician", "org-b", sub="dr-b")
    assert_problem(await client.post(url, json={}, headers=other_org), 404, "not-found")
    patient = bearer(settings, "patient", "org-a", patient=patient_id)
    assert_problem(await client.post(url, json={}, headers=patient), 403, "forbidden")

    pdf = await client.post(
        f"/v1/patients/{patient_id}/files", content=make_pdf(), params={"filename": "a.pdf"}, headers=clinician
    )
    assert pdf.status_code == 201, pdf.text
    response = await client.post(f"/v1/files/{pdf.json()['id']}/render", json={}, headers=clinician)
    assert_problem(response, 422, "render-not-supported")

    # Nothing changed after the refusals.
    shown = await client.get(f"/v1/files/{uploaded['id']}", headers=clinician)
    assert shown.json()["renditions"] == uploaded["renditions"]
