"""Where an infant's head is: scanner space <-> MNI space through its pose, its size and a smooth
individual deformation (used by ``synth.simulate`` to place each infant in the scanner)."""

from __future__ import annotations

import numpy as np

from kerasmyelin.synth.cohort import SubjectSpec
from kerasmyelin.synth.tissue_model import MNI_BRAIN_ML


def rotation_matrix(pitch_deg: float, roll_deg: float, yaw_deg: float) -> np.ndarray:
    """Rotation about x (nodding), then y (tilting to a shoulder), then z (turning)."""
    a, b, c = np.deg2rad([pitch_deg, roll_deg, yaw_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


class Warp:
    """Subject (scanner) space <-> MNI space: pose, size and a smooth individual deformation."""

    def __init__(self, spec: SubjectSpec, centre_mni: np.ndarray, rng: np.random.Generator,
                 brain_ml: float = MNI_BRAIN_ML, proportions=(1.0, 1.0, 1.0)):
        size = (spec.brain_volume_ml / brain_ml) ** (1 / 3)
        # The anatomy's own proportions (an infant scaffold's), then the infant's own.
        self.scale = (size * np.asarray(spec.scale_anisotropy, dtype=np.float64)
                      * np.asarray(proportions, dtype=np.float64))
        self.rotation = rotation_matrix(*spec.rotation_deg)
        self.translation = np.asarray(spec.translation_mm, dtype=np.float64)
        self.centre = centre_mni
        # Three plane waves of displacement, 60-140 mm wavelength, ~2 mm (MNI mm) each.
        k = rng.normal(size=(3, 3))
        k *= (2 * np.pi / rng.uniform(60, 140, 3) / np.linalg.norm(k, axis=1))[:, None]
        self.wave_vectors = k
        self.wave_phase = rng.uniform(0, 2 * np.pi, 3)
        direction = rng.normal(size=(3, 3))
        self.wave_amplitude = direction / np.linalg.norm(direction, axis=1)[:, None] * rng.uniform(1.0, 2.5, 3)[:, None]

    def displacement(self, u: np.ndarray) -> np.ndarray:
        """MNI-mm displacement at body-frame points u of shape (3, ...)."""
        out = np.zeros_like(u)
        for k, phi, amp in zip(self.wave_vectors, self.wave_phase, self.wave_amplitude):
            s = np.sin(np.tensordot(k.astype(u.dtype), u, axes=1) + phi)
            out += amp.astype(u.dtype).reshape((3,) + (1,) * (u.ndim - 1)) * s
        return out

    def grid_to_mni(self, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray) -> np.ndarray:
        """MNI mm (3, X, Y, Z) of the scanner grid spanned by 1-D axes xs, ys, zs (float32).

        Every step is linear in the three axes, so it is done by broadcasting 1-D arrays; only
        the outputs are full grids.
        """
        f32 = np.float32
        axes = (xs[:, None, None] - f32(self.translation[0]), ys[None, :, None] - f32(self.translation[1]),
                zs[None, None, :] - f32(self.translation[2]))

        def linear(coeffs):
            return sum(f32(c) * a for c, a in zip(coeffs, axes))

        rt = self.rotation.T
        out = np.stack([linear(rt[c]) / f32(self.scale[c]) + f32(self.centre[c]) for c in range(3)])
        for k, phi, amp in zip(self.wave_vectors, self.wave_phase, self.wave_amplitude):
            # k . u with u = R^T (w - t) equals (R k) . (w - t).
            s = np.sin(linear(self.rotation @ k) + f32(phi))
            for c in range(3):
                out[c] += f32(amp[c]) * s
        return out

    def to_mni(self, world: np.ndarray) -> np.ndarray:
        """Scanner mm (3, ...) -> MNI mm (3, ...)."""
        shape = world.shape
        w = world.reshape(3, -1) - self.translation[:, None].astype(world.dtype)
        u = (self.rotation.T.astype(world.dtype) @ w).reshape(shape)
        scale = self.scale.astype(world.dtype).reshape((3,) + (1,) * (len(shape) - 1))
        centre = self.centre.astype(world.dtype).reshape(scale.shape)
        return u / scale + centre + self.displacement(u)

    def to_world(self, mni: np.ndarray, iterations: int = 8) -> np.ndarray:
        """MNI mm (3, N) -> scanner mm (3, N), inverting the deformation by fixed point."""
        mni = np.asarray(mni, dtype=np.float64)
        u = self.scale[:, None] * (mni - self.centre[:, None])
        for _ in range(iterations):
            u = self.scale[:, None] * (mni - self.centre[:, None] - self.displacement(u))
        return self.rotation @ u + self.translation[:, None]
