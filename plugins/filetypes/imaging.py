"""Writing picture renditions (shareable copies, thumbnails, posters) the same way for every format of this package.

Every rendition is written fresh from pixels: no EXIF, XMP, ICC profile other than sRGB's, text
chunks or comments survive, so nothing identifying leaves through a rendition's metadata.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PIL import Image, ImageCms

from careshare.core.models import RenditionOutput

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["has_transparency", "save_jpeg", "save_png", "thumbnail_rendition", "to_display_mode"]

JPEG = "image/jpeg"
PNG = "image/png"
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
_LAB = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB"))


def has_transparency(image: Image.Image) -> bool:
    """True when the image has an alpha channel or transparent palette entry that is actually used."""
    if image.mode in ("RGBA", "LA", "PA"):
        alpha = image.getchannel("A")
        return alpha.getextrema()[0] < 255
    return image.mode == "P" and "transparency" in image.info


def to_display_mode(image: Image.Image) -> Image.Image:
    """RGB, RGBA, L or LA: modes every phone shows; 16-bit, float, CMYK and Lab are converted (8 bits per channel)."""
    mode = image.mode
    if mode in ("RGB", "RGBA", "L", "LA"):
        return image
    if mode in ("P", "PA"):
        return image.convert("RGBA" if has_transparency(image) else "RGB")
    if mode == "I" or mode.startswith("I;16"):
        return image.convert("I").point(lambda value: value / 256).convert("L")
    if mode in ("1", "F"):
        return image.convert("L")  # float pixels are clipped to 0-255
    if mode == "La":
        return image.convert("LA")
    if mode == "LAB":
        # Pillow's plain conversion would treat a and b as colour channels: go through LittleCMS.
        return ImageCms.profileToProfile(image, _LAB, _SRGB, outputMode="RGB")  # type: ignore[return-value]
    return image.convert("RGBA" if image.has_transparency_data else "RGB")


def _bare(image: Image.Image) -> Image.Image:
    """``image`` with an empty ``info``: Pillow's writers copy some of it (PNG the ICC profile, JPEG and
    GIF the comment), so pixels from a source file would otherwise carry its metadata along."""
    if not image.info:
        return image
    bare = image.copy()
    bare.info = {}
    return bare


def save_jpeg(image: Image.Image, path: Path, *, role: str, quality: int = 85) -> RenditionOutput:
    """A baseline-compatible progressive JPEG with no metadata; alpha is flattened onto white."""
    image = _bare(image)
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
    image = _bare(image)
    image.save(path, "PNG", compress_level=6)
    return RenditionOutput(role=role, media_type=PNG, path=path)


def thumbnail_rendition(image: Image.Image, workdir: Path, size: int, quality: int = 85) -> RenditionOutput:
    """The ``thumbnail`` rendition: longest edge ``size``, JPEG, or PNG when transparency shows.

    Never enlarged. One resize straight from ``image`` (box-reduce then Lanczos): no full-size copy.
    """
    thumb = to_display_mode(image)
    width, height = thumb.size
    scale = min(1.0, size / max(width, height))
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    if target != thumb.size:
        thumb = thumb.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if has_transparency(thumb):
        return save_png(thumb, workdir / "thumbnail.png", role="thumbnail")
    return save_jpeg(thumb, workdir / "thumbnail.jpg", role="thumbnail", quality=quality)
