// Package discovery keeps Consul in step with Redis Sentinel.
//
// It has three parts that the agent wires together:
//
//   - Monitor holds the Sentinel truth: which address is the master of every
//     name that the known Sentinels monitor (docs/ARCHITECTURE.md, "Role logic"). It subscribes to the
//     failover channels of every Sentinel, polls them on a short tick and
//     notifies subscribers the moment the truth changes.
//   - Registrar owns everything this agent registers in the local Consul
//     agent: it writes only what changed, keeps the TTL checks alive and
//     re-registers whatever the Consul agent lost.
//   - Instance and SentinelInstance are the runners for one local Redis and
//     one local Sentinel. Instance decides the role with the pure function
//     Decide, the split-brain guard, and hands the result to the Registrar.
package discovery
