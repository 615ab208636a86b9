"""The metric instruments and the client spans, usable from any layer (adapters record their
calls to sources here); providers, exporters and the server interceptor are the gateway's
(``gateway.telemetry``)."""
