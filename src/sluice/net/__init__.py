"""Sockets of the data plane: read and written by the proxy's own code, below the event loop's
transports (`sluice.net.transport`), and the listeners and outbound connections that make them
(`sluice.net.endpoints`)."""
