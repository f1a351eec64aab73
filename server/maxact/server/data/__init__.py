"""Datasets: image folders, readers, preprocessing and its exact inverse."""
