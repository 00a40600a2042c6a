"""Images in and out: robust reading (any format, orientation, bit depth, URL), streamed atomic
writing, output paths that never overwrite an input, input expansion and the fsspec helper."""
