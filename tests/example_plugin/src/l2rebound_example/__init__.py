"""An example plugin of l2rebound: one experiment kind (``relabelled``) and one training rule (``ridge``)."""
