"""Writing image renditions (shareable copies, thumbnails, posters) the same way for every format.

Every rendition is written fresh from pixels: no EXIF, XMP, ICC profile other than sRGB's, text
chunks or comments survive, so nothing identifying leaves through a rendition's metadata.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PIL import Image

from careshare.core.models import RenditionOutput

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["has_transparency", "save_jpeg", "save_png", "thumbnail_rendition", "to_display_mode"]

JPEG = "image/jpeg"
PNG = "image/png"


def has_transparency(image: Image.Image) -> bool:
    """True when the image has an alpha channel or transparent palette entry that is actually used."""
    if image.mode in ("RGBA", "LA", "PA"):
        alpha = image.getchannel("A")
        return alpha.getextrema()[0] < 255
    return image.mode == "P" and "transparency" in image.info


def to_display_mode(image: Image.Image) -> Image.Image:
    """RGB, RGBA, L or LA: modes every phone shows; 16-bit and CMYK are converted (8 bits per channel)."""
    if image.mode in ("RGB", "RGBA", "L", "LA"):
        return image
    if image.mode == "P" or image.mode == "PA":
        return image.convert("RGBA" if has_transparency(image) else "RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        return image.point(lambda value: value / 256).convert("L")
    if image.mode == "1":
        return image.convert("L")
    return image.convert("RGBA" if "A" in image.getbands() else "RGB")


def save_jpeg(image: Image.Image, path: Path, *, role: str, quality: int = 85) -> RenditionOutput:
    """A baseline-compatible progressive JPEG with no metadata; alpha is flattened onto white."""
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGB", image.size, "white")
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        image = background
    elif image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    image.save(path, "JPEG", quality=quality, optimize=True, progressive=True)
    return RenditionOutput(role=role, media_type=JPEG, path=path)


def save_png(image: Image.Image, path: Path, *, role: str) -> RenditionOutput:
    """A PNG with no metadata chunks (compress level 6: Pillow's balance of size and speed)."""
    image.save(path, "PNG", compress_level=6)
    return RenditionOutput(role=role, media_type=PNG, path=path)


def thumbnail_rendition(image: Image.Image, workdir: Path, size: int, quality: int = 85) -> RenditionOutput:
    """The ``thumbnail`` rendition: longest edge ``size``, JPEG, or PNG when transparency shows."""
    thumb = to_display_mode(image).copy()
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    if has_transparency(thumb):
        return save_png(thumb, workdir / "thumbnail.png", role="thumbnail")
    return save_jpeg(thumb, workdir / "thumbnail.jpg", role="thumbnail", quality=quality)
