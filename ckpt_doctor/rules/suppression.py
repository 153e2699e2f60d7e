"""CKPT001: a `# noqa` code of ours that suppresses nothing.

The rule is declared here (code, name, page, --select/--ignore) but has no check of its own: it needs every other
rule's findings of the file first, so `ckpt_doctor.check.noqa.apply` reports it after they ran.
"""

from __future__ import annotations

from ckpt_doctor.findings import Applicability, Severity
from ckpt_doctor.rules import rule


@rule("CKPT001", "unused-noqa", Severity.WARNING, fix=Applicability.SAFE, inputs=(),
      summary="a `# noqa: CKPTnnn` code that suppresses no finding")
def unused_noqa(ctx):  # pragma: no cover - never called: `inputs=()`
    return ()
