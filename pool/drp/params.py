"""DRP param names ctxpool reads and writes, defined once.

Where DRP's content uses two spellings, the seed's ``docker-context/...`` comes first and
RackN's documented ``context-broker/...`` second; readers accept both, writers use the first.
"""

from __future__ import annotations

#: Which node runs a machine's context (``docker-context``, the default, means "not placed").
OWNER_PARAMS = ("docker-context/owner", "context-broker/owner")
#: Which node set (tag) hosts a machine's or a cluster's contexts.
TAG_PARAMS = ("docker-context/tag", "context-broker/tag")
#: The node sets a node belongs to.
TAGS_PARAMS = ("docker-context/tags", "context-broker/tags")
#: Liveness name of a node.
MEMBER_NAME_PARAMS = ("docker-context/member-name", "context-broker/member-name")
#: Why a machine's context cannot run (set by the owning node, cleared when fixed).
ERROR_PARAM = "docker-context/error"
#: The broker a cluster or resource broker is served by.
RESOURCE_BROKER_PARAM = "resource/broker"
#: How many member machines a cluster wants.
COUNT_PARAMS = ("cluster/count", "context-broker/count")
#: The member machines a cluster has (written by the context broker).
MEMBERS_PARAMS = ("cluster/machines", "context-broker/machines")
#: Marks a machine the context broker created for a cluster (value: the cluster's uuid).
MEMBER_PARAM = "ctxpool/cluster"

#: Host mounts of a machine's context: ``--mount`` specs separated by ``;``.
VOLUMES_PARAM = "context/volumes"
#: Published ports of a machine's context: ``-p`` specs (a list, or ``;``/``,``-separated).
PUBLISH_PORTS_PARAM = "context/publish-ports"
#: Written by the owning node on create and replace: node, container id, image id, start time.
CONTAINER_INFO_PARAM = "context/container-info"
#: Applied by a cluster's broker to the members it creates.
BROKER_SET_CONTEXT_PARAM = "broker/set-context"
BROKER_SET_PIPELINE_PARAM = "broker/set-pipeline"
BROKER_SET_WORKFLOW_PARAM = "broker/set-workflow"

#: What the simulator's stand-in drpcli writes to its own machine (the demo's round trip).
AGENT_SEEN_PARAM = "ctxpool-agent/seen"

#: Context Meta keys (DRP's Meta is a map of strings).
IMAGEPULL_META = "Imagepull"
CHECKSUM_META = "Checksum"
#: ``image`` (the image brings its own agent) opts a context out of drpcli injection.
AGENT_META = "ctxpool/agent"

#: The owner value DRP's docker-context plugin uses for "not placed on a node yet".
UNPLACED = "docker-context"
DEFAULT_ENGINE = "docker-context"
DEFAULT_BROKER = "context-broker"

#: Where a node writes back: who runs the context, and why it cannot run.
OWNER_PARAM = OWNER_PARAMS[0]
TAG_PARAM = TAG_PARAMS[0]
