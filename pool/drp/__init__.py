"""The one DRP client core: param names, errors, configuration, token auth, REST and the
websocket. Used by the bridge and by the nodes' write-back; imports neither Celery nor Docker."""
