"""Folder of pairs → validated, resized uint8 arrays (cached on disk) and a leak-free split.

The flow: :mod:`pairs` finds and pairs files, :mod:`decode` reads one image or mask, :mod:`resize`
resizes, :mod:`table` decodes many pairs in parallel, :mod:`cache` keeps the result memory-mapped on
disk, :mod:`dataset` puts them together (``decode_dataset``, ``check``), :mod:`split` holds out whole
drives, and :mod:`transforms` is the one preprocessing contract. Nothing raises at the first bad
file: every problem is collected as a :class:`~.problems.Problem` naming the file, so a user fixes a
whole dataset in one round."""
