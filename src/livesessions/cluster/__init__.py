"""Scale-out mode: many nodes on one PostgreSQL and one Redis acting as one
service. The domain, HTTP and realtime layers are unchanged; what differs is
built here from their ports: room events carried between nodes (fanout), each
node's lease and the reaping of dead ones (node), and the services put
together on PostgreSQL and Redis (services)."""
