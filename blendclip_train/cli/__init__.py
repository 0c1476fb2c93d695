"""Console scripts of the trainer: ``blendclip-train``, ``blendclip-evaluate``, ``blendclip-mine``."""
