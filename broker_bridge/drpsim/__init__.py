"""A DRP simulator: the subset of DRP's API ctxpool uses, over HTTP and a websocket. Same
paths, same JSON keys, same auth schemes; it can drop a share of events (DRP does under load)
and cut every websocket (DRP does not reconnect them). It also keeps DRP's file space and
serves a stand-in ``drpcli`` there.

    sim = DrpSim(drop_share=0.3).start()          # serves on 127.0.0.1:<port> in a thread
    sim.put_context("runner", engine="docker-context", image="drp/agent:v4")
    m = sim.create_machine("m1", context="runner", params={"docker-context/tag": "ci"})
    sha = sim.put_file("docker-contexts/runner_v1.tar", Path("runner.tar"))
    ...
    sim.stop()

Modules, one job each:

- :mod:`~broker_bridge.drpsim.patch`: RFC 6902 patches;
- :mod:`~broker_bridge.drpsim.state`: objects, defaults and the event fan-out;
- :mod:`~broker_bridge.drpsim.auth`: credentials and what a machine token may do;
- :mod:`~broker_bridge.drpsim.rest`: the object routes;
- :mod:`~broker_bridge.drpsim.ws`: the event websocket;
- :mod:`~broker_bridge.drpsim.files` and :mod:`~broker_bridge.drpsim.filesapi`: the file
  space on disk and its routes;
- :mod:`~broker_bridge.drpsim.agent`: the stand-in ``drpcli`` script;
- :mod:`~broker_bridge.drpsim.sim`: :class:`DrpSim`, which serves them from a thread.
"""

from broker_bridge.drpsim.agent import AGENT_FILES, AGENT_PARAM, AGENT_SCRIPT, write_agent
from broker_bridge.drpsim.auth import TokenBook, permitted
from broker_bridge.drpsim.files import FileConflictError, FilePathError, FileStore, check_path
from broker_bridge.drpsim.filesapi import SHA_HEADER
from broker_bridge.drpsim.patch import PatchError, apply_patch
from broker_bridge.drpsim.sim import DrpSim
from broker_bridge.drpsim.state import (
    DEFAULT_TOKEN,
    DEFAULT_USERS,
    MACHINE_KINDS,
    PARAM_SCHEMAS,
    Subscriber,
    new_machine,
    server_info,
)

__all__ = [
    "AGENT_FILES",
    "AGENT_PARAM",
    "AGENT_SCRIPT",
    "DEFAULT_TOKEN",
    "DEFAULT_USERS",
    "MACHINE_KINDS",
    "PARAM_SCHEMAS",
    "SHA_HEADER",
    "DrpSim",
    "FileConflictError",
    "FilePathError",
    "FileStore",
    "PatchError",
    "Subscriber",
    "TokenBook",
    "apply_patch",
    "check_path",
    "new_machine",
    "permitted",
    "server_info",
    "write_agent",
]
