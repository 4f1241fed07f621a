"""kerasmyelin: estimate infant myelination age from T1- and T2-weighted MRI (after Wada et al. 2019)."""

from kerasmyelin.runtime import apply_fast_cpu_settings as _apply_fast_cpu_settings

# Before anything imports TensorFlow: its CPU kernel and thread choices are read at start-up.
_apply_fast_cpu_settings()

__version__ = "0.1.0"
