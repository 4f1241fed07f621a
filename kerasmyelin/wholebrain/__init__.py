"""The whole-brain pipeline: NIfTI T1w + T2w -> the five levels -> age, interval, delay flag, report.

``volumes`` brings a T1w/T2w pair onto one RAS grid (and 3-D scans into 5 mm slabs),
``plausibility`` checks that it is an infant's head (geometry, one image twice, noise, brain size),
``level_finder`` locates levels a-e by registration to MNI152, ``contrast_order`` checks which image
is the T1w, ``pipeline`` runs the paper's preparation and model on the result and explains it.
"""
