"""credgate: a federated data-sharing gateway for personal-bankruptcy credit repair.

Everything installs under this one name, so a bank that installs credgate beside its own code
gets no ``gateway`` or ``audit`` package of ours in its way. The repository keeps its folders
where they are; this package links them in (docs/architecture.md, "Where things live"; the
layers import one way only, which ``lint-imports`` checks):

* ``credgate.gateway`` (gateway/): services, interceptors, engine, sync, workflows, CLI, app;
* ``credgate.adapters`` (adapters/): one adapter per source kind, the mock sources, the
  conformance kit;
* ``credgate.consent`` (consent/) and ``credgate.audit`` (audit/): the consent register and
  policy, the audit log; their gRPC services and commands are the gateway's;
* ``credgate.core`` (core/): the bottom layer every other package may use (identity numbers,
  institutions, errors, subject tokens, the database, secret files, instruments);
* ``credgate.api`` (proto/): the generated code of the unified schema, e.g.
  ``credgate.api.credit_repair.v1.report_pb2``; the wire names stay ``credit_repair.v1``.
"""
