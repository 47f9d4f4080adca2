"""Model-repair defenses: each returns a repaired copy of the suspicious model."""
