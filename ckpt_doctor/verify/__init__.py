"""``ckpt-doctor verify``: one real training step of the user's script, measured and compared with ``check``
and ``estimate`` (DESIGN.md section 5, docs/verify.md).

The parent side (``command``, ``runner``, ``report``, ``codes``) imports no torch or transformers; only the
child process (``bootstrap``, ``synthetic``) does.
"""
