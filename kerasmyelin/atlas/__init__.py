"""The MNI152 atlas as the project uses it: tissue priors and the alignment of a brain to it.

Shared by the level finder (``wholebrain``), the infant anatomy scaffolds (``synth``) and the
sim-to-real check (``validation``), so it sits below all three.
"""
