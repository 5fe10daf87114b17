"""Heartbeats over a NATS cluster, with no single hub to lose.

Agents publish the protocol's own payloads (hello, beats, probe reports, stacks) to one
subject per worker and message type, ``<prefix>.<fleet>.<host>.<worker>.<type>``, and
answer injects by request/reply on ``….<worker>.cmd.inject``. Monitors and hubs
subscribe; each runs the same detector on the same messages, so any number of them agree without talking
to each other. NATS's own view of each worker's connection (the servers' ``/connz``) is
the evidence of life that keeps ``starved`` apart from ``dead``.

* :mod:`heartmon.bus.subjects` -- names: identities to subjects and back (pure).
* :mod:`heartmon.bus.hearing` -- what a subject's message means for the fleet (pure).
* :mod:`heartmon.bus.evidence` -- which workers NATS holds a connection for (pure core,
  and the poller of the servers' monitoring endpoints around it).
* :mod:`heartmon.bus.connect` -- the one way heartmon connects: servers, credentials,
  TLS, and the refusal to send commands on a cluster anyone may join.
* :mod:`heartmon.bus.agent_link` -- the agent's side.
* :mod:`heartmon.bus.commands` -- injects by request/reply.
* :mod:`heartmon.bus.bridge` -- ``heartmon hub --nats``: a hub whose workers are on the bus.
"""
