"""The command lines: ``moss-train``, ``moss-evaluate``, ``moss-derain``, ``moss-score``,
``moss-export`` and ``moss-study`` (``pyproject.toml`` names them).

Each checks its arguments and config before TensorFlow is imported
(:mod:`.common`), so a mistake is reported in well under a second.
"""
