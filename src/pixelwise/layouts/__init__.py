"""Class files of the well-known dataset layouts (``name r g b`` per line, class id = line order),
shipped as package data and read by :mod:`pixelwise.data.layouts`."""
