"""The night: its steps (read, compute, write; typed results) and their one order."""
