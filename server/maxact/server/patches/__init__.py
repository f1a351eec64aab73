"""Patches: a hit's receptive field cropped from the original image, rendered."""
