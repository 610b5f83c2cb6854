"""The fleet: many game-server processes (and machines) behind one room directory on Redis.

``directory`` (the Redis keys and their transactions), ``placement`` (which process takes a room: pure
functions), ``heartbeat`` (a process's registration under a TTL, on its own thread), ``code_routes`` (a
process's join codes published so any join service can route them), ``member`` (the game-server side: what
the reactor hands the heartbeat, rooms adopted from a dead process), ``join_router`` (the stateless join
service in front of the fleet), ``failover`` (a dead process's rooms placed again), ``agones`` (the Agones
SDK's local REST API), ``redis_process`` (a loopback redis-server for one box and the tests),
``supervisor`` (``rehearsal serve --processes N``). Without a directory none of this runs: one process
serves everything (the embedded default). See FLEET.md beside this file.
"""
