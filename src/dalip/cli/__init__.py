"""The `dalip` command line (`main`): one module per subcommand; nothing below parses argv."""

from dalip.cli.main import main

__all__ = ["main"]
