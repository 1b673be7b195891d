// Package hostsvc holds both ends of the services conductord gives hosts
// so that a host makes no JetStream consumer of its own: a consumer's
// deliveries go where its maker says, and the server does not look inside
// the request that makes it, so a host free to make consumers could aim
// jobs or cancels at another host's command subject (docs/security.md,
// "A host's own account").
//
//   - Consumers: a host asks for the consumers of one of its job types
//     (subject.Space.ConsumersAs); conductord makes them, one per
//     priority, each filtered on its jobs' subject, with settings it
//     bounds. The host then pulls from them and acks, which its grant
//     allows.
//   - Cancels: conductord follows the cancel bucket, holds its ids for the
//     bucket's TTL and numbers each new one; a host reads the ids held,
//     page by page (subject.Space.CancelsAs), and follows the numbered
//     ones on subject.Space.CancelFeed. A gap in the numbers, a
//     reconnect, another conductord (a new epoch), or a check every
//     FollowCheck that finds ids it missed makes it read them again.
//   - Store: a host on a credential of its own writes its jobs' states
//     and dead entries through conductord, a burst of them in one request
//     (subject.Space.StoreAs, wire.StoreItem), each checked against the
//     job type of its subject and written with conductord's own headers:
//     a store takes any header (a roll-up purges a bucket), and a state is
//     keyed by job id alone. Requests wait in a queue per credential and
//     are served in turn (queue.go); the checks read what they must by
//     the subjects of the request's type or key only (checks.go,
//     proof.go). The final states written are archived as they are
//     written (Config.Archive) and remembered for the host's ends
//     (ends.go: Server.Ended).
//   - Reads: a host on a credential of its own reads the state of a job
//     of one of its types (subject.Space.ReadAs); conductord answers with
//     a state of that type only, from the bucket or the archive.
//
// A host with no credential of its own (an open conductor, the shared
// token) uses the subjects without a credential id
// (subject.Space.ConsumersOf, CancelsOf), which only an admin may publish
// to.
package hostsvc
