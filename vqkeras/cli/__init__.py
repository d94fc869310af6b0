"""The command-line tools behind bin/: flags shared by all tools and one module per tool."""
