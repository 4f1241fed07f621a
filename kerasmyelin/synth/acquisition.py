"""The acquisition of a sampled object: the slice profile's partial volume, Fourier encoding at
the acquired matrix with motion ghosting and thermal noise, and zero-filling to the reconstruction
matrix (pure numpy/scipy on arrays; ``synth.simulate`` wires them per infant)."""

from __future__ import annotations

import numpy as np
import scipy.fft


def slab_kernel(width_vox: float) -> np.ndarray:
    """A box of fractional width (in voxels) with its ends weighted by the part they cover."""
    half = width_vox / 2.0
    n = int(np.ceil(half - 0.5))
    x = np.arange(-n, n + 1, dtype=np.float64)
    w = np.clip(np.minimum(x + 0.5, half) - np.maximum(x - 0.5, -half), 0, 1)
    return (w / w.sum()).astype(np.float32)


def _zero_fill(k: np.ndarray, size: int) -> np.ndarray:
    """Centre an (n, n, ...) unshifted k-space in a (size, size, ...) one (n even, size >= n)."""
    n = k.shape[0]
    if n == size:
        return k
    big = np.zeros((size, size) + k.shape[2:], dtype=k.dtype)
    h = n // 2
    big[:h, :h], big[:h, -h:], big[-h:, :h], big[-h:, -h:] = k[:h, :h], k[:h, -h:], k[-h:, :h], k[-h:, -h:]
    return big


def _zero_filled_ifft2(k: np.ndarray, size: int) -> np.ndarray:
    """``ifft2(_zero_fill(k, size))`` (orthonormal) without transforming the rows known to be zero.

    The first pass runs only over the n columns that hold data, a quarter less work than the
    full 2-D transform of the zero-filled matrix.
    """
    n = k.shape[0]
    h = n // 2
    a = np.zeros((size, n) + k.shape[2:], dtype=k.dtype)
    a[:h], a[-h:] = k[:h], k[-h:]
    a = scipy.fft.ifft(a, axis=0, norm="ortho", overwrite_x=True)
    b = np.zeros((size, size) + k.shape[2:], dtype=k.dtype)
    b[:, :h], b[:, -h:] = a[:, :h], a[:, -h:]
    return scipy.fft.ifft(b, axis=1, norm="ortho", overwrite_x=True)


def kspace_reconstruct(image: np.ndarray, acquired: int, recon: int, noise_sigma: float, ghost_phase: float,
                        rng: np.random.Generator) -> np.ndarray:
    """Encode (n, n, Z) slices, bring them to the acquired matrix, corrupt, zero-fill, magnitude.

    Args:
        image: noise-free slices sampled on an n x n grid over the field of view.
        acquired: the acquired matrix (k-space lines actually measured).
        recon: the reconstruction matrix (zero-filled).
        noise_sigma: standard deviation of the complex noise, in image units at ``acquired``.
        ghost_phase: phase error (radians) of every other phase-encoding line; 0 for none.
    """
    n = image.shape[0]
    k = scipy.fft.fft2(image, axes=(0, 1), norm="ortho")  # float32 in, complex64 out
    k = _zero_fill(k, acquired)
    k *= np.float32(acquired / n)  # the orthonormal transform's scale for the larger matrix
    if ghost_phase:
        # Periodic motion: alternate phase-encoding lines (axis 1, antero-posterior) carry a
        # phase error, which puts a faint copy of the head half a field of view away.
        k[:, 1::2, :] *= np.complex64(np.exp(1j * ghost_phase))
    # Thermal noise. Each image pixel sums every k-space sample, so its noise is Gaussian
    # whatever the per-sample distribution (central limit over n^2 samples); uniform samples
    # of the same variance are 4x cheaper to draw than normal ones.
    noise = rng.random(2 * k.size, dtype=np.float32).view(np.complex64).reshape(k.shape)
    noise -= np.complex64(0.5 + 0.5j)
    noise *= np.float32(noise_sigma * np.sqrt(12.0))
    k += noise
    out = np.abs(_zero_filled_ifft2(k, recon))
    out *= np.float32(recon / acquired)
    return out


def band_limited_resample(image: np.ndarray, acquired: int, recon: int) -> np.ndarray:
    """``image`` brought to the reconstruction grid the way ``kspace_reconstruct`` brings the
    signal there (same zero-filling, so the same positions), without noise or ghosting."""
    n = image.shape[0]
    k = _zero_fill(scipy.fft.fft2(image, axes=(0, 1), norm="ortho"), acquired)
    return np.real(_zero_filled_ifft2(k, recon)) * np.float32(recon / n)
