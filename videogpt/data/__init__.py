"""The data layer, along its seams:

    sources       the types every data.format shares (SourceItem, Source, Video, Rejection), the public walk
                  and split helpers, and the plain-videos format
    ucf101, bair, moving_mnist, frames    one module per dataset layout, built on sources
    formats       the table of data.format values: discover, detect (for auto) and readers
    clip_store    the Zarr clip store: writer, resume and readers; the one module that knows its layout
    dataset       the clip store as a torch Dataset
    ffmpeg_io, rawframes, tfrecord    decoding and encoding
    moving_digits the built-in toy dataset

Modules are imported directly (`from videogpt.data.dataset import ClipDataset`), so that a stage needing only
ffmpeg does not pay for importing torch.
"""
