"""Pure builders: specs -> argv tuples for remote docker/shell, and parsers of their output."""
