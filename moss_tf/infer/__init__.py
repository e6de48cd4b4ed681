"""Inference: derain photos of any size in tiles (:mod:`.derain`), score them (:mod:`.metrics`,
:mod:`.scoring`), and load the shipped model by name (:mod:`.presets`)."""
