"""``dqd profile``: learn rules for every column of a table, and dependencies between columns, from the table's
majority; compile them to a rules repository the server loads like hand-written rules."""
from __future__ import annotations

from .learn import ColumnProfile, TableProfile, profile_table
from .tables import field_types, read_table
from .write import write_profile

__all__ = ["ColumnProfile", "TableProfile", "field_types", "profile_table", "read_table", "write_profile"]
