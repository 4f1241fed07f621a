"""kerasmyelin: estimate infant myelination age from T1- and T2-weighted MRI (after Wada et al. 2019)."""

__version__ = "0.1.0"
