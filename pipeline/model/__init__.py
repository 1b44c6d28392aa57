"""Models: algorithms, training, artifacts, THE evaluation, off-policy estimates and plots."""
