"""The data layer: ffmpeg I/O (ffmpeg_io), the built-in moving digits (moving_digits), the preprocess stage
that builds the Zarr clip store (preprocess) and the torch Dataset reading it (dataset).

Modules are imported directly (`from videogpt.data.dataset import ClipDataset`), so that a stage needing only
ffmpeg does not pay for importing torch.
"""
