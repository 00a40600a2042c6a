"""JPEG itself: the codec and its tables, the 8x8 block DCT, consistency with a file's
quantization (JpegGrid, constrain, calibration), and compression traces found in pixels."""
