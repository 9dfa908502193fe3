"""The host's BLE link to the straps.

``bumble_backend`` is a bleak backend on the Bumble stack (virtual or HCI-served controllers), the
central side of the virtual bench; the peripherals it meets there live in ``breathsync.sim``.
"""
