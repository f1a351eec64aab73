"""`maxact demo`: a real pretrained CNN on real photos, end to end."""
