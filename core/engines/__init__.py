"""Where and how networks run: the Net interface, PyTorch and OpenVINO nets, conversion to
OpenVINO, device and threads, precision, and the machine's instruction sets."""
