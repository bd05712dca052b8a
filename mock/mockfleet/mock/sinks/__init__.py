"""Where a device's messages go. Sinks are imported lazily by ``make_sink``
so that a device pays only for the transport it uses."""
