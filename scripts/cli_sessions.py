"""`toolgate sessions ...`: search, show, export, replay, verify and report recorded calls."""

import click


@click.group()
def sessions() -> None:
    """Search, show, export, replay, verify and report recorded sessions."""
