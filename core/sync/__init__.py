"""The provider side of the sync protocol: how an update is signed and the reference client
that streams updates to a gateway (the mock providers use it; the gateway's receiving side is
``gateway.sync``)."""
