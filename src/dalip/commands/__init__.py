"""Subcommand parsers of the `dalip` command (the command-line layer; see dalip.cli)."""
