"""The linter: discovering files, checking each (analysis -> rules -> findings), caching, fixing, reporting."""
