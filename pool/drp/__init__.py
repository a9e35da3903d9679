"""The one DRP client core, used by the bridge and by the nodes' write-back; imports neither
Celery nor Docker (import-linter checks it).

- :mod:`~pool.drp.params`: DRP param names; :mod:`~pool.drp.paths`: REST paths, quoted once;
- :mod:`~pool.drp.errors`: the error tree and the one status-to-error mapping;
- :mod:`~pool.drp.config`: :class:`~pool.drp.config.DrpConfig` (URL, credentials, TLS);
- :mod:`~pool.drp.auth`: token lifetime (when a user token is fetched and renewed);
- :mod:`~pool.drp.client`: the async client (REST, paging, machine tokens, websocket events);
- :mod:`~pool.drp.sync`: the nodes' thread-safe synchronous token source;
- :mod:`~pool.drp.rest`: a small synchronous REST client on that token source (a node's own
  machine params).

Import the modules, not this package: it loads nothing (``params`` must stay cheap to import).
"""
