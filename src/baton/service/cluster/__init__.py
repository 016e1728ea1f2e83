"""``baton serve`` as a shard of a cluster: tenants, leases in etcd with fencing, the Kamailio
edge's routing, fail-over to a standby, and a whole cluster on one machine (docs/cluster.md)."""
