"""Wire-protocol codecs and authentication, free of I/O."""
