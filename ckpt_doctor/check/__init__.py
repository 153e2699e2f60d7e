"""The linter: discovering files, checking each (analysis -> rules -> findings), caching, fixing, reporting."""

# `check --output-format` and `output-format` in the configuration (a leaf: the command line imports it at start)
OUTPUT_FORMATS = ("concise", "full", "json", "json-lines", "junit", "github", "gitlab", "pylint", "rdjson", "sarif")
