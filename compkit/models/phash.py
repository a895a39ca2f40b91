"""Perceptual hashes (pHash) of images, as the imagehash package computes them and Shopee's image_phash holds them."""

from collections.abc import Sequence

import numpy as np
from PIL import Image

from compkit.errors import DataError

HASH_BITS = 64
_HASH_SIDE = 8
_RESIZED_SIDE = 32  # imagehash's hash_size * highfreq_factor


def phash_hex(image: Image.Image) -> str:
    """Return the 64-bit pHash of ``image`` as 16 hex characters, identical to ``str(imagehash.phash(image))``."""
    from scipy.fft import dct

    greyscale = image.convert("L").resize((_RESIZED_SIDE, _RESIZED_SIDE), Image.Resampling.LANCZOS)
    pixels = np.asarray(greyscale, dtype=np.float64)
    low_frequencies = dct(dct(pixels, axis=0), axis=1)[:_HASH_SIDE, :_HASH_SIDE]
    bits = low_frequencies > np.median(low_frequencies)
    return np.packbits(bits.ravel()).tobytes().hex()


def phash_bits(hex_strings: Sequence[str]) -> np.ndarray:
    """Return the hashes' bits as an (n, 64) uint8 array of 0/1, most significant bit first."""
    chunks = []
    for hex_string in hex_strings:
        try:
            chunk = bytes.fromhex(hex_string)
        except (TypeError, ValueError):
            chunk = b""
        if len(chunk) != HASH_BITS // 8:
            raise DataError(f"an image_phash must be {HASH_BITS // 4} hex characters, got {hex_string!r}")
        chunks.append(chunk)
    packed = np.frombuffer(b"".join(chunks), dtype=np.uint8).reshape(len(chunks), HASH_BITS // 8)
    return np.unpackbits(packed, axis=1)


def phash_vectors(hex_strings: Sequence[str]) -> np.ndarray:
    """Return (n, 64) float32 unit vectors of ±1/8 per bit: their cosine is 1 - 2 * hamming / 64."""
    bits = phash_bits(hex_strings).astype(np.float32)
    return (bits * 2.0 - 1.0) / 8.0
