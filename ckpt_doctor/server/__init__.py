"""`ckpt-doctor server`: the Language Server Protocol over stdio (pygls / lsprotocol, the `[server]` extra).

One job per module:

- `command`      the click command; a one-line error when the `[server]` extra is missing
- `protocol`     the pygls server: document sync, debounced checks, the LSP features wired to the modules below
- `documents`    which editor buffers are checked, and checking one in memory as `check` checks a file
- `positions`    where a finding lies in the editor's text (notebooks: in the .ipynb JSON)
- `workspace`    the settings of a file: `[tool.ckpt-doctor]` overridden by what the editor sends
- `diagnostics`  findings as LSP diagnostics
- `actions`      quick fixes, "fix all", `# noqa` suppressions: the edits `check --fix` makes
- `hover`        the memory estimate over a model load or a training-arguments / trainer call

Nothing here imports torch or transformers; pygls is imported only by `protocol` (and so only when the server runs).
"""
