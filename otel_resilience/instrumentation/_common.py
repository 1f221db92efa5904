"""``Patcher``, the installer's old name, kept for the client modules that use it.

Guards are installed by ``_install.Installer`` (as the innermost layer under the OTel
instrumentations). The guarded call itself runs on the one path of
``otel_resilience._guard`` (its module docstring says how a client guard declares itself).
"""

from __future__ import annotations

from ._install import Installer as Patcher

__all__ = ["Patcher"]
