"""The database every package shares: engine settings, ``Database``, threaded transactions, the
declarative ``Base`` with the shared tables, and the write order of a decided write."""
