"""Pure builders and parsers: argv tuples for remote commands, and parsers of their output (no I/O)."""
