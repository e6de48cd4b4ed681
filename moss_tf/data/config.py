"""Data section of the experiment config (owned by the data pipeline)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DataConfig:
    """Where labeled, unlabeled and test images come from.

    Placeholder: the data pipeline fills this in.
    """

    test: str | None = None

    def to_dict(self) -> dict:
        import dataclasses

        return dataclasses.asdict(self)

    def validate(self, where: str) -> None:
        """Raise ConfigError for impossible values."""
