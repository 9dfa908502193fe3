"""The host's BLE link to the straps, and the virtual Bumble bench it is tested on.

``bumble_backend`` is a bleak backend on the Bumble stack (virtual or HCI-served controllers);
``virtual_peripheral`` stands up GATT peripherals with fault switches on the same virtual link.
"""
