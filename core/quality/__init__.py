"""Compression quality from pixels: the encoder's reading of a picture, quality embeddings and
their plot."""
