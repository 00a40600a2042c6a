"""OpenVINO, imported without its usage telemetry.

A plain ``import openvino`` reports the import to Google Analytics unless the user has run
OpenVINO's ``opt_in_out --opt_out`` (its telemetry is on by default for pip installs): it forks a
process to send the event, counts uses in ``~/intel/stats`` and keeps a client id there, and the
interpreter waits for the sender at exit (0.1 s of a one-image restore here). This package sends
nothing anywhere, so it imports OpenVINO with the ``openvino_telemetry`` library hidden for the
moment of the import: OpenVINO's model converter then takes the no-op stub it ships for installs
without that library, and every other part of OpenVINO (``convert_model`` included) is there as
usual. The library is importable again afterwards for whoever wants it.
"""
from __future__ import annotations

import sys
from types import ModuleType

_TELEMETRY = "openvino_telemetry"


def import_openvino() -> ModuleType:
    """The ``openvino`` module; imported here, if nothing has imported it yet, without telemetry."""
    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    hide = _TELEMETRY not in sys.modules
    if hide:
        sys.modules[_TELEMETRY] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        import openvino
    finally:
        if hide and sys.modules.get(_TELEMETRY, 0) is None:
            del sys.modules[_TELEMETRY]
    return openvino
