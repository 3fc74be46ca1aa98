"""Images as compressed bytes: how the frames and flow stores encode what they keep.

``jpeg`` (at a quality 1..100) or lossless ``png``, through OpenCV (libjpeg-turbo, libpng):
the same image and settings give the same bytes, and decoding gives the same pixels, on
any machine with the same OpenCV build. Images are ``(H, W)`` grayscale or ``(H, W, 3)`` RGB.
"""

from __future__ import annotations

import cv2
import numpy as np

CODECS = ("jpeg", "png")  # png: lossless
PNG_LEVEL = 1  # zlib level of png: higher levels saved little and cost more CPU


def encode_image(image: np.ndarray, codec: str, quality: int) -> bytes:
    """``(H, W)`` gray or ``(H, W, 3)`` RGB ``uint8`` image as a ``jpeg`` (at ``quality``) or ``png`` file's bytes.

    Raises:
        ValueError: on an unknown codec or an image of another shape or type.
    """
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"an image must be (H, W) or (H, W, 3) uint8; got {image.shape} {image.dtype}")
    pixels = np.ascontiguousarray(image[..., ::-1] if image.ndim == 3 else image)  # OpenCV wants BGR
    if codec == "jpeg":
        ok, buf = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif codec == "png":
        ok, buf = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL])
    else:
        raise ValueError(f"codec must be one of {', '.join(CODECS)}; got {codec!r}")
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise RuntimeError(f"OpenCV could not encode a {image.shape} image as {codec}")
    return buf.tobytes()


def decode_image(data: np.ndarray, gray: bool = False) -> np.ndarray:
    """The image ``encode_image`` made from ``data`` (``(n,) uint8``): ``(H, W)`` if ``gray``, else ``(H, W, 3)`` RGB.

    Raises:
        ValueError: if the bytes are not an encoded image.
    """
    pixels = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR)
    if pixels is None:
        raise ValueError(f"{len(data)} bytes are not an encoded image")
    return pixels if gray else np.ascontiguousarray(pixels[..., ::-1])
