"""Models on the box: the bundle contract, validation, the library and USB import, the TFLite runtime."""
