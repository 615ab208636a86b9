"""The witness's HTTP side: ``credgate witness serve`` (server), the gateway's submitter and
the ``audit verify --witness-url`` fetch (client). The judgement itself is ``audit.witness``."""
