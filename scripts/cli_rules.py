"""`toolgate rules ...`: check and explain rule packs (filled in by the rule-engine work)."""

import click


@click.group()
def rules() -> None:
    """Check, explain and test rule packs."""
