"""The bottom layer: what every other package may use and which uses none of them.

Identity numbers, institution ids and certificate identities, the error type and request ids,
subject tokens, secret files, the database (engine, ``Database``, threaded transactions, the
declarative ``Base`` and the shared tables), the OpenTelemetry instruments and client spans, and
the provider side of the sync protocol (channel, signing, ``ProviderClient``). It imports only
the generated code (``credgate.api``) and third-party libraries; ``consent``, ``audit`` and
``adapters`` build on it and the gateway sits on top (docs/architecture.md, "Layers";
``lint-imports`` enforces the order).
"""
