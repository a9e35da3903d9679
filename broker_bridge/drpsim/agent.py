"""A stand-in ``drpcli`` for context containers: a POSIX ``sh`` script (busybox is enough)
that implements ``drpcli machines processjobs`` far enough for tests.

With ``RS_ENDPOINTS`` (the first one; ``RS_ENDPOINT`` when unset), ``RS_TOKEN`` (a machine
token) and ``RS_UUID`` it posts the param :data:`AGENT_PARAM` (a JSON string
``"<hostname> <UTC time>"``) to its own machine, every ``DRPCLI_SIM_INTERVAL_S`` seconds
(default 5), and exits 0 on SIGTERM or SIGINT. A failed post is logged and retried at the
next interval. Any other command exits 2.

The simulator serves it as ``drpcli.amd64.linux`` and ``drpcli.arm64.linux`` in its file
space (:data:`AGENT_FILES`); tests write it to a file with :func:`write_agent`.
"""

from __future__ import annotations

from pathlib import Path

#: The param the stand-in agent posts to its machine.
AGENT_PARAM = "ctxpool-agent/seen"
#: Where the simulator serves the agent in its file space (``drpcli.<arch>.<os>``).
AGENT_FILES = ("drpcli.amd64.linux", "drpcli.arm64.linux")

AGENT_SCRIPT = f"""#!/bin/sh
# Stand-in drpcli of ctxpool's DRP simulator: `drpcli machines processjobs` only.
# Posts the param {AGENT_PARAM} to its own machine (RS_UUID) with its machine token
# (RS_TOKEN) at the first of RS_ENDPOINTS, every DRPCLI_SIM_INTERVAL_S seconds (default 5).
set -u

say() {{ echo "drpcli(sim): $*" >&2; }}

run() {{  # a command, or the busybox applet of that name when the image has no link for it
    if command -v "$1" >/dev/null 2>&1; then "$@"; else busybox "$@"; fi
}}

if [ "$#" -lt 2 ] || [ "$1" != machines ] || [ "$2" != processjobs ]; then
    say "usage: drpcli machines processjobs (this stand-in knows nothing else)"
    exit 2
fi
: "${{RS_UUID:?RS_UUID is not set}}"
: "${{RS_TOKEN:?RS_TOKEN is not set}}"
set -- ${{RS_ENDPOINTS:-}} ${{RS_ENDPOINT:-}}
if [ "$#" -eq 0 ]; then
    say "neither RS_ENDPOINTS nor RS_ENDPOINT is set"
    exit 2
fi
endpoint=${{1%/}}
interval=${{DRPCLI_SIM_INTERVAL_S:-5}}
host=unknown
read -r host </proc/sys/kernel/hostname || true

trap 'say "stopping"; exit 0' TERM INT

post() {{
    now=$(run date -u +%Y-%m-%dT%H:%M:%SZ)
    run wget -q -O /dev/null \\
        --header "Authorization: Bearer $RS_TOKEN" \\
        --header "Content-Type: application/json" \\
        --post-data "\\"$host $now\\"" \\
        "$endpoint/api/v3/machines/$RS_UUID/params/{AGENT_PARAM}"
}}

say "processing jobs for machine $RS_UUID at $endpoint"
while :; do
    if post; then
        say "posted {AGENT_PARAM}"
    else
        say "could not post {AGENT_PARAM} to $endpoint; retrying in ${{interval}}s"
    fi
    run sleep "$interval" &
    wait $!
done
"""


def write_agent(path: Path) -> Path:
    """Write the stand-in ``drpcli`` to ``path``, executable (mode 0755); returns ``path``.

    Raises:
        OSError: the file cannot be written.
    """
    path.write_text(AGENT_SCRIPT)
    path.chmod(0o755)
    return path
