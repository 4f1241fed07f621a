"""Using a trained run on one infant: the estimate set against typical infants (``normative``)."""
