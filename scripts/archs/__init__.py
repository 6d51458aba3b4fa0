"""Network definitions for architectures spandrel does not support (one module per architecture)."""
