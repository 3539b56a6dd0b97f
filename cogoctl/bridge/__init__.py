"""The legacy bridge: listeners on the old agent ports relaying to the new workers.

Separable parts: `routes` (pure: which worker a legacy port leads to, and which instance gets
the next connection), `relay` (bytes between two streams), `listener` (accepting, limits,
counters), `directory` (where the workers are now, from the supervisor). Protocol translation
(A2A, MCP) will sit between listener and relay without changing either.
"""
